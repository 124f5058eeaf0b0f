"""The docker token flow as an httpx auth: on a Bearer challenge, fetch a token for its scope, then retry."""

from __future__ import annotations

import base64
import re
from collections.abc import Generator

import httpx

CHALLENGE_PARAM_RE = re.compile(r'(\w+)="([^"]*)"')


def challenge_params(header: str) -> dict[str, str]:
    """`Bearer realm="...",service="...",scope="..."` as a dict (with `scheme`)."""
    scheme, _, rest = header.partition(" ")
    return {"scheme": scheme, **dict(CHALLENGE_PARAM_RE.findall(rest))}


class TokenAuth(httpx.Auth):
    """What docker and oras do: anonymous or Basic to the realm for a token, the token to the registry."""

    requires_response_body = True

    def __init__(self, user: str | None = None, password: str | None = None) -> None:
        self.basic = base64.b64encode(f"{user}:{password}".encode()).decode() if user else None
        self.token: str | None = None

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self.token:
            request.headers["Authorization"] = f"Bearer {self.token}"
        response = yield request
        challenge = challenge_params(response.headers.get("www-authenticate", ""))
        if response.status_code not in (401, 403) or challenge["scheme"] != "Bearer":
            return
        params = {key: challenge[key] for key in ("service", "scope") if key in challenge}
        token_request = httpx.Request("GET", challenge["realm"], params=params)
        if self.basic:
            token_request.headers["Authorization"] = f"Basic {self.basic}"
        token_response = yield token_request
        if token_response.status_code != 200:
            return
        self.token = token_response.json()["token"]
        request.headers["Authorization"] = f"Bearer {self.token}"
        yield request
