"""Who is asking, and may they: credentials to a principal, a principal and a resource to allow, 401 or 403.

A request carries nothing (anonymous), Basic credentials (checked against htpasswd, or user `oidc` with a CI
job's ID token, see app.auth.oidc) or a Bearer token (checked against the signing key or an external issuer's).
A denied request answers 401 with a challenge when the caller is anonymous or its credentials are wrong, and
403 DENIED when a known user lacks the right; with token auth the 403 also names the scope, so a client holding
a token of too narrow a scope asks for a new one (RFC 6750 `insufficient_scope`).
"""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass
from pathlib import Path

from starlette.requests import Request

from app.auth.access import DELETE, PULL, PUSH, AccessError, AccessRules
from app.auth.htpasswd import Htpasswd, HtpasswdError, PasswordChecks
from app.auth.oidc import OIDC_USER, KeySourceError, OidcVerifier, Workload
from app.auth.ratelimit import FailureLimiter
from app.auth.tokens import (
    CATALOG,
    REGISTRY,
    REPOSITORY,
    Access,
    Claims,
    InvalidToken,
    TokenIssuer,
    TokenKeyError,
    TokenVerifier,
    load_jwks,
    load_private_key,
    load_public_key,
)
from app.errors import Denied, Unauthorized
from app.settings import Settings, SettingsError

TOKEN_PATH = "/auth/token"
BASIC_REALM = "storj-registry"
CHALLENGE_ACTIONS = {PULL: "pull", PUSH: "pull,push", DELETE: "delete"}
REPOSITORY_ACTIONS = frozenset(CHALLENGE_ACTIONS)
log = logging.getLogger("storj_registry.auth")


@dataclass(frozen=True)
class Resource:
    """What a request touches: `repository`/<name>/<action>, or `registry`/`catalog`/`*`."""

    type: str
    name: str
    action: str

    @property
    def scope(self) -> str:
        actions = CHALLENGE_ACTIONS.get(self.action, self.action) if self.type == REPOSITORY else self.action
        return f"{self.type}:{self.name}:{actions}"

    @property
    def detail(self) -> list[dict[str, str]]:
        """The error detail distribution gives for a refused access, which some clients print."""
        return [{"Type": self.type, "Name": self.name, "Action": self.action}]


CATALOG_RESOURCE = Resource(REGISTRY, CATALOG, "*")


@dataclass(frozen=True)
class Principal:
    """The caller: a user name (None: anonymous); what its bearer token allows, or the workload it proved to be."""

    user: str | None
    claims: Claims | None = None
    workload: Workload | None = None


ANONYMOUS = Principal(None)


class Gate:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.htpasswd = _load_htpasswd(settings.auth_htpasswd)
        self.rules = _load_rules(settings.auth_access)
        self.oidc = _load_oidc(settings, self.rules)
        self.failures = FailureLimiter(settings.auth_max_failures)
        self.password_checks = PasswordChecks()
        self.issuer, self.verifier = _token_parts(settings)

    @property
    def enabled(self) -> bool:
        return self.settings.auth_enabled

    # who ------------------------------------------------------------------------------------------------

    async def identify(self, request: Request) -> Principal:
        """The caller behind the Authorization header; wrong credentials are a 401, never anonymous."""
        header = request.headers.get("authorization")
        if not header:
            return ANONYMOUS
        scheme, _, credentials = header.partition(" ")
        scheme = scheme.lower()
        if scheme == "basic" and (self.htpasswd is not None or self.oidc is not None):
            return await self.check_basic(request, credentials.strip())
        if scheme == "bearer" and self.verifier is not None:
            try:
                claims = self.verifier.verify(credentials.strip())
            except InvalidToken:
                raise self.unauthorized(request, None, "invalid or expired token", error="invalid_token") from None
            return Principal(claims.subject, claims)
        raise self.unauthorized(request, None, "unsupported authorization scheme")

    async def check_basic(self, request: Request, credentials: str) -> Principal:
        """The caller behind valid Basic credentials (see `login`)."""
        user, password = _decode_basic(credentials)
        return await self.login(request, user, password)

    async def login(self, request: Request, user: str, password: str) -> Principal:
        """An htpasswd user, or a workload: user `oidc` with an ID token of a trusted issuer as the password."""
        if user == OIDC_USER and self.oidc is not None:
            return await self.check_id_token(request, password)
        return Principal(await self.check_password(request, user, password))

    async def check_id_token(self, request: Request, token: str) -> Principal:
        """The workload a valid ID token proves; refused tokens count as failed logins of the address."""
        assert self.oidc is not None
        address = client_address(request)
        self.failures.check(address)
        slot = self.failures.reserve(address)  # before any await, as for passwords
        try:
            workload = await self.oidc.verify(token)
        except InvalidToken as exc:
            raise self.unauthorized(request, None, f"ID token refused: {exc}", basic=True) from None
        self.failures.release(address, slot)
        return Principal(workload.subject, workload=workload)

    async def check_password(self, request: Request, user: str, password: str) -> str:
        """`user` if the password is right; failures count against the client's address, and block it.

        The slot is taken before bcrypt runs and nothing is awaited between the check and the taking, so
        concurrent logins cannot all pass the limit at once.
        """
        address = client_address(request)
        self.failures.check(address)
        if self.htpasswd is not None and user and self.htpasswd.recently_verified(user, password):
            return user
        slot = self.failures.reserve(address)
        if self.htpasswd is None or not user or not await self.password_checks.verify(self.htpasswd, user, password):
            raise self.unauthorized(request, None, "invalid username or password", basic=True)
        self.failures.release(address, slot)
        return user

    # may ------------------------------------------------------------------------------------------------

    def allowed_actions(self, principal: Principal, kind: str, name: str) -> frozenset[str]:
        if principal.claims is not None:
            granted = principal.claims.actions(kind, name)
            return REPOSITORY_ACTIONS if kind == REPOSITORY and "*" in granted else granted
        if kind == REGISTRY:
            catalog = self.rules.may_list_catalog(principal.user, principal.workload)
            catalog = catalog or self.settings.auth_anonymous_pull
            return frozenset({"*"}) if name == CATALOG and catalog else frozenset()
        granted = self.rules.actions(principal.user, name, principal.workload)
        return granted | {PULL} if self.settings.auth_anonymous_pull else granted

    def allows(self, principal: Principal, resource: Resource) -> bool:
        if not self.enabled:
            return True
        return resource.action in self.allowed_actions(principal, resource.type, resource.name)

    def authorize(self, request: Request, principal: Principal, resource: Resource | None) -> None:
        """Raise 401/403 unless `principal` may touch `resource` (None: any authenticated caller may)."""
        if resource is None:
            if principal.user is None and principal.claims is None:
                raise self.unauthorized(request, None, "authentication required")
            return
        if self.allows(principal, resource):
            return
        if principal.user is None:
            raise self.unauthorized(request, resource, "authentication required")
        headers = {}
        if self.settings.auth_token_enabled:
            headers["WWW-Authenticate"] = self.bearer_challenge(request, resource, "insufficient_scope")
        raise Denied("requested access to the resource is denied", detail=resource.detail, headers=headers)

    def grant(self, principal: Principal, requested: list[Access]) -> list[Access]:
        """What a token for `principal` may carry: the requested actions the rules allow, nothing more."""
        granted = []
        for entry in requested:
            allowed = self.allowed_actions(principal, entry.type, entry.name)
            wanted = allowed if "*" in entry.actions and entry.type == REPOSITORY else entry.actions
            if actions := wanted & allowed:
                granted.append(Access(entry.type, entry.name, frozenset(actions)))
        return granted

    # challenges -----------------------------------------------------------------------------------------

    def unauthorized(
        self, request: Request, resource: Resource | None, message: str, *, error: str = "", basic: bool = False
    ) -> Unauthorized:
        if self.settings.auth_token_enabled and not basic:
            challenge = self.bearer_challenge(request, resource, error)
        else:
            challenge = f'Basic realm="{BASIC_REALM}"'
        detail = None if resource is None else resource.detail
        return Unauthorized(message, detail=detail, headers={"WWW-Authenticate": challenge})

    def bearer_challenge(self, request: Request, resource: Resource | None, error: str = "") -> str:
        parts = [f'realm="{self.realm(request)}"', f'service="{self.settings.auth_token_service}"']
        if resource is not None:
            parts.append(f'scope="{resource.scope}"')
        if error:
            parts.append(f'error="{error}"')
        return "Bearer " + ",".join(parts)

    def realm(self, request: Request) -> str:
        if self.settings.auth_token_realm:
            return self.settings.auth_token_realm
        base = self.settings.service_url or str(request.base_url).rstrip("/")
        return base + TOKEN_PATH


def client_address(request: Request) -> str:
    """The peer's address (already the real client's when a trusted proxy forwarded the request)."""
    return request.client.host if request.client else "unknown"


def _decode_basic(credentials: str) -> tuple[str, str]:
    """`user:password` from base64; ("", "") when malformed, which no user matches."""
    try:  # non-ASCII text is a ValueError of its own, neither binascii.Error nor UnicodeDecodeError
        decoded = base64.b64decode(credentials, validate=True).decode()
    except ValueError:
        return "", ""
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else ("", "")


def _config_error(variable: str, exc: Exception) -> SettingsError:
    return SettingsError.naming(variable, exc)


def _load_htpasswd(path: Path | None) -> Htpasswd | None:
    try:
        return Htpasswd.load(path) if path else None
    except HtpasswdError as exc:
        raise _config_error("REGISTRY_AUTH_HTPASSWD", exc) from None


def _load_rules(path: Path | None) -> AccessRules:
    try:
        return AccessRules.load(path) if path else AccessRules.allow_everyone()
    except AccessError as exc:
        raise _config_error("REGISTRY_AUTH_ACCESS", exc) from None


def _load_oidc(settings: Settings, rules: AccessRules) -> OidcVerifier | None:
    """The verifier of workload ID tokens; every issuer a rule names must be a trusted one."""
    trusted = {entry.issuer for entry in settings.auth_oidc_issuers}
    if unknown := rules.issuers - trusted:
        raise _config_error("REGISTRY_AUTH_ACCESS", AccessError(f"rules name untrusted issuers {sorted(unknown)}"))
    if not trusted:
        return None
    try:
        return OidcVerifier(settings.auth_oidc_issuers)
    except KeySourceError as exc:
        raise _config_error("REGISTRY_AUTH_OIDC_ISSUERS", exc) from None


def _token_parts(settings: Settings) -> tuple[TokenIssuer | None, TokenVerifier | None]:
    """The issuer (own tokens) and the verifier; with an external issuer, only the verifier."""
    if not settings.auth_token_enabled:
        return None, None
    issuer, service = settings.auth_token_issuer, settings.auth_token_service
    variable = "REGISTRY_AUTH_TOKEN_KEY"
    try:
        if settings.auth_token_public_key:
            variable = "REGISTRY_AUTH_TOKEN_PUBLIC_KEY"
            return None, TokenVerifier({"": load_public_key(settings.auth_token_public_key)}, issuer, service)
        if settings.auth_token_jwks:
            variable = "REGISTRY_AUTH_TOKEN_JWKS"
            return None, TokenVerifier(load_jwks(settings.auth_token_jwks), issuer, service)
        private, ephemeral = load_private_key(settings.auth_token_key)
    except TokenKeyError as exc:
        raise _config_error(variable, exc) from None
    if ephemeral:
        log.warning(
            "token signing key is ephemeral (REGISTRY_AUTH_TOKEN_KEY unset): tokens die with this process, "
            "and replicas need one shared key"
        )
    signer = TokenIssuer(private, issuer, service, settings.auth_token_ttl)
    return signer, signer.verifier()
