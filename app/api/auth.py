"""`/auth/token`: the token endpoint of the Docker registry token flow, when the service issues its own tokens.

GET with Basic credentials (or none, for an anonymous token) and `scope=repository:<name>:pull,push`
parameters, as docker, containerd, skopeo and oras send it; POST with an OAuth2 password grant, as
containerd tries first. The token carries the requested actions the caller's rules allow, nothing more.
"""

from __future__ import annotations

from urllib.parse import parse_qs

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from app.auth import Gate, Principal
from app.auth.gate import ANONYMOUS, TOKEN_PATH
from app.auth.tokens import Access, TokenIssuer, parse_scope
from app.errors import RegistryError, Unsupported

MAX_FORM_BYTES = 16 * 1024
NO_STORE = {"Cache-Control": "no-store"}

router = APIRouter()


class FormTooLarge(RegistryError):
    status, code = 413, "SIZE_INVALID"


@router.get(TOKEN_PATH)
async def token(request: Request) -> Response:
    issuer = _issuer(request)
    gate: Gate = request.app.state.gate
    _check_service(request, request.query_params.get("service"))
    principal = await _principal(gate, request)
    scopes = [scope for value in request.query_params.getlist("scope") for scope in value.split(" ")]
    return JSONResponse(issuer.issue(principal.user, _granted(gate, principal, scopes)), headers=NO_STORE)


@router.post(TOKEN_PATH)
async def oauth_token(request: Request) -> Response:
    """The OAuth2 password grant (RFC 6749 4.3); refresh tokens are not issued, so no other grant exists."""
    issuer = _issuer(request)
    gate: Gate = request.app.state.gate
    form = await _read_form(request)
    if form.get("grant_type") != "password":
        raise RegistryError("only grant_type=password is supported", status=400)
    _check_service(request, form.get("service"))
    username, password = form.get("username", ""), form.get("password", "")
    principal = await gate.login(request, username, password)
    body = issuer.issue(principal.user, _granted(gate, principal, form.get("scope", "").split(" ")))
    body["scope"] = " ".join(form.get("scope", "").split())
    return JSONResponse(body, headers=NO_STORE)


def _issuer(request: Request) -> TokenIssuer:
    gate: Gate = request.app.state.gate
    if gate.issuer is None:
        raise Unsupported("this registry issues no tokens", status=404)
    return gate.issuer


def _check_service(request: Request, service: str | None) -> None:
    expected = request.app.state.gate.settings.auth_token_service
    if service and service != expected:
        raise RegistryError("unknown service", detail={"service": service[:100], "expected": expected})


async def _principal(gate: Gate, request: Request) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    if not header:
        return ANONYMOUS
    if scheme.lower() != "basic":
        raise gate.unauthorized(request, None, "the token endpoint takes Basic credentials", basic=True)
    return await gate.check_basic(request, credentials.strip())


def _granted(gate: Gate, principal: Principal, scopes: list[str]) -> list[Access]:
    requested = [access for scope in scopes if scope and (access := parse_scope(scope)) is not None]
    return gate.grant(principal, requested)


async def _read_form(request: Request) -> dict[str, str]:
    """A small urlencoded body, read with a ceiling (a login form is a few hundred bytes)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise FormTooLarge("form too large", detail={"limit": MAX_FORM_BYTES})
    try:
        fields = parse_qs(body.decode(), keep_blank_values=True, max_num_fields=32)
    except (UnicodeDecodeError, ValueError):
        raise RegistryError("malformed form body", status=400) from None
    return {key: values[0] for key, values in fields.items()}
