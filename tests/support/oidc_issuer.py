"""A local OIDC issuer on 127.0.0.1: discovery document, JWKS, and ID tokens shaped like GitHub's and GitLab's.

It plays the part of `token.actions.githubusercontent.com` or `gitlab.com` for the registry under test: the
registry fetches its discovery document and keys over HTTP, and the tests sign tokens with its private keys.
Every request is counted by path, so tests can assert how often the registry fetched keys.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

DISCOVERY = "/.well-known/openid-configuration"
JWKS = "/.well-known/jwks"
SigningKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def new_key(algorithm: str) -> SigningKey:
    if algorithm == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass
class Issuer:
    """The issuer's URL, its current keys (the first signs), and the requests it answered."""

    url: str
    algorithm: str
    keys: dict[str, SigningKey] = field(default_factory=dict)
    requests: Counter[str] = field(default_factory=Counter)
    jwks_uri: str | None = None  # what discovery names instead of the issuer's own JWKS

    def rotate(self) -> str:
        """A new signing key under a new `kid`, published first; the old ones stay published. Returns the kid."""
        kid = uuid.uuid4().hex[:16]
        self.keys = {kid: new_key(self.algorithm), **self.keys}
        return kid

    def retire_all_but_newest(self) -> None:
        newest = next(iter(self.keys))
        self.keys = {newest: self.keys[newest]}

    def jwks(self) -> dict[str, Any]:
        entries = []
        for kid, key in self.keys.items():
            entry = json.loads(jwt.algorithms.get_default_algorithms()[self.algorithm].to_jwk(key.public_key()))
            entries.append({**entry, "kid": kid, "use": "sig", "alg": self.algorithm})
        return {"keys": entries}

    def sign(self, claims: dict[str, Any], *, kid: str | None = None, headers: dict[str, Any] | None = None) -> str:
        """A token of these claims signed with the newest key (or the key `kid`)."""
        kid = kid or next(iter(self.keys))
        return jwt.encode(claims, self.keys[kid], algorithm=self.algorithm, headers={"kid": kid, **(headers or {})})

    def claims(self, audience: str, lifetime: int = 300, **extra: Any) -> dict[str, Any]:
        now = int(time.time())
        return {"iss": self.url, "aud": audience, "iat": now, "nbf": now - 5, "exp": now + lifetime, **extra}

    def github(self, audience: str, owner: str = "acme", repo: str = "app", ref: str = "refs/heads/main") -> str:
        """A token as GitHub Actions hands a job with `id-token: write` (the claims its docs list)."""
        return self.sign(
            self.claims(
                audience,
                sub=f"repo:{owner}/{repo}:ref:{ref}",
                jti=uuid.uuid4().hex,
                ref=ref,
                ref_type="tag" if ref.startswith("refs/tags/") else "branch",
                repository=f"{owner}/{repo}",
                repository_owner=owner,
                repository_id="123456",
                repository_owner_id="654321",
                repository_visibility="private",
                run_id="1",
                run_number="1",
                run_attempt="1",
                actor="octocat",
                workflow="release",
                event_name="push",
                job_workflow_ref=f"{owner}/{repo}/.github/workflows/release.yml@{ref}",
                runner_environment="github-hosted",
            )
        )

    def gitlab(self, audience: str, namespace: str = "acme", project: str = "app", ref: str = "main") -> str:
        """A token as GitLab CI hands a job through `id_tokens:` (the claims its docs list)."""
        return self.sign(
            self.claims(
                audience,
                sub=f"project_path:{namespace}/{project}:ref_type:branch:ref:{ref}",
                jti=uuid.uuid4().hex,
                namespace_id="42",
                namespace_path=namespace,
                project_id="4242",
                project_path=f"{namespace}/{project}",
                user_id="7",
                user_login="dev",
                pipeline_id="99",
                pipeline_source="push",
                job_id="100",
                ref=ref,
                ref_type="branch",
                ref_protected="true",
                runner_environment="gitlab-hosted",
            )
        )


@contextmanager
def running_issuer(algorithm: str = "RS256", host: str = "127.0.0.1") -> Iterator[Issuer]:
    """An issuer with one key, serving discovery and JWKS on a free port of `host` until the block ends."""
    issuer = Issuer(url="", algorithm=algorithm)
    issuer.rotate()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            issuer.requests[self.path] += 1
            if self.path == DISCOVERY:
                body = {
                    "issuer": issuer.url,
                    "jwks_uri": issuer.jwks_uri or issuer.url + JWKS,
                    "id_token_signing_alg_values_supported": [],
                }
            elif self.path == JWKS:
                body = issuer.jwks()
            else:
                self.send_error(404)
                return
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((host, 0), Handler)
    issuer.url = f"http://{host}:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield issuer
    finally:
        server.shutdown()
        server.server_close()
