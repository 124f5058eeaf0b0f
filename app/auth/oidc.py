"""Workload identity: the OIDC ID token of a CI job (GitHub Actions, GitLab CI, Kubernetes, ...) as its credential.

A job logs in as user `oidc` with its ID token as the password, with Basic auth or at `/auth/token`. The token
must come from an issuer of REGISTRY_AUTH_OIDC_ISSUERS, name that issuer's audience, be within its lifetime and
carry the signature of a key the issuer publishes. What the job may then do is decided by the claim rules of the
access rules file (app.auth.access), never by the token alone: any GitHub repository can obtain a token of
GitHub's issuer, for any audience it likes.

An issuer's keys come from its discovery document (`/.well-known/openid-configuration` -> `jwks_uri`) or from a
local JWKS file. Keys travel over https only: a `jwks_uri` on plain `http://` is refused unless its host is a
loopback address (an issuer on the same machine, as in tests), like the issuer URL itself (app.settings). Keys
are kept, and read again only when a token names a `kid` not among them (the issuer rotated its keys), at most
once per `refresh_seconds`: requests never wait on the issuer once its keys are known, and
tokens with invented kids cannot make the service hammer it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.error import URLError
from urllib.parse import urlsplit

import anyio.to_thread
import jwt

from app.auth.tokens import (
    CLOCK_SKEW_SECONDS,
    InvalidToken,
    PublicKey,
    TokenKeyError,
    algorithms_for,
    keys_by_id,
    load_jwks,
)
from app.settings import LOOPBACK_HOSTS, OidcIssuer

OIDC_USER = "oidc"
DISCOVERY_PATH = "/.well-known/openid-configuration"
FETCH_TIMEOUT_SECONDS = 10.0
MAX_DISCOVERY_BYTES = 1024 * 1024
# Signature algorithms with a public key; `none` and the HMAC family (a shared secret) never verify a workload.
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
REQUIRED_CLAIMS = ["exp", "iss", "aud", "sub"]

log = logging.getLogger("storj_registry.auth")


class KeySourceError(Exception):
    """The issuer's keys could not be read; the message says where and why."""


@dataclass(frozen=True)
class Workload:
    """A verified ID token: who issued it and every claim it carries (what the claim rules look at)."""

    issuer: str
    claims: Mapping[str, Any]

    @property
    def subject(self) -> str:
        return str(self.claims["sub"])


class IssuerKeys:
    """The signing keys of one issuer, fetched lazily and refreshed on an unknown `kid`, rate-limited."""

    def __init__(self, config: OidcIssuer) -> None:
        self.config = config
        self._keys: dict[str, PublicKey] = {}
        self._loaded_at: float | None = None
        self._jwks_uri = ""
        self._lock = threading.Lock()
        if config.jwks_file is not None:  # a file is read at start: a wrong one stops the service there
            self._keys = self._load()
            self._loaded_at = time.monotonic()

    async def key_for(self, kid: str) -> PublicKey:
        """The key a token's header names ("" for none); a fetch only when it is unknown and one is due."""
        key = self._find(kid)
        if key is None and self._refresh_due():
            await anyio.to_thread.run_sync(self._refresh, kid)
            key = self._find(kid)
        if key is None and not self._keys:
            raise InvalidToken("the issuer's keys could not be fetched (see the service's log); try again later")
        if key is None:
            raise InvalidToken("the token is signed by a key its issuer does not publish")
        return key

    def _find(self, kid: str) -> PublicKey | None:
        if kid in self._keys:
            return self._keys[kid]
        if not kid and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        return None

    def _refresh_due(self) -> bool:
        return self._loaded_at is None or time.monotonic() - self._loaded_at >= self.config.refresh_seconds

    def _refresh(self, kid: str) -> None:
        """Read the keys again (in a worker thread); concurrent callers wait for one fetch, not one each."""
        with self._lock:
            if self._find(kid) is not None or not self._refresh_due():
                return
            self._loaded_at = time.monotonic()  # failures count too: a dead issuer is not asked per request
            try:
                self._keys = self._load()
            except KeySourceError as exc:
                log.warning("keys of OIDC issuer %s unavailable: %s", self.config.issuer, exc)

    def _load(self) -> dict[str, PublicKey]:
        if self.config.jwks_file is not None:
            try:
                return load_jwks(self.config.jwks_file)
            except TokenKeyError as exc:
                raise KeySourceError(str(exc)) from None
        uri = self._jwks_uri or self._discover()
        try:
            jwk_set = jwt.PyJWKClient(uri, cache_jwk_set=False, timeout=FETCH_TIMEOUT_SECONDS).get_jwk_set()
        except jwt.PyJWTError as exc:
            raise KeySourceError(f"JWKS {uri}: {exc}") from None
        keys = keys_by_id(jwk_set)
        if not keys:
            raise KeySourceError(f"JWKS {uri}: no RSA (2048 bits or more), EC or Ed25519 public key")
        return keys

    def _discover(self) -> str:
        """`jwks_uri` of the issuer's discovery document, which must name the configured issuer itself."""
        url = self.config.issuer.rstrip("/") + DISCOVERY_PATH
        try:
            with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT_SECONDS) as response:
                document = json.loads(response.read(MAX_DISCOVERY_BYTES))
        except (URLError, OSError, ValueError) as exc:
            raise KeySourceError(f"discovery {url}: {exc}") from None
        if not isinstance(document, dict) or document.get("issuer") != self.config.issuer:
            raise KeySourceError(f"discovery {url} does not describe issuer {self.config.issuer}")
        uri = document.get("jwks_uri")
        if not isinstance(uri, str) or not uri.startswith(("https://", "http://")):
            raise KeySourceError(f"discovery {url} names no jwks_uri")
        if not _travels_safely(uri):
            raise KeySourceError(f"discovery {url} names keys fetched over plain http ({uri[:200]}): use https")
        self._jwks_uri = uri
        return uri


def _travels_safely(uri: str) -> bool:
    """https, or http to a loopback host: keys fetched over plain http elsewhere could be swapped on the way."""
    parts = urlsplit(uri)
    return parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS)


class OidcVerifier:
    """Checks ID tokens of the trusted issuers; anything else is an `InvalidToken` (a 401)."""

    def __init__(self, issuers: Sequence[OidcIssuer]) -> None:
        self.issuers = {config.issuer: IssuerKeys(config) for config in issuers}

    async def verify(self, token: str) -> Workload:
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"not a JWT: {exc}") from None
        issuer, algorithm = unverified.get("iss"), header.get("alg")  # any JSON: an array is unhashable
        keys = self.issuers.get(issuer) if isinstance(issuer, str) else None
        if keys is None:
            raise InvalidToken("the token's issuer is not trusted here")
        if not isinstance(algorithm, str) or algorithm not in ASYMMETRIC_ALGORITHMS:
            raise InvalidToken("the token must be signed with the issuer's private key (RS*, PS*, ES*, EdDSA)")
        kid = header.get("kid")
        key = await keys.key_for(kid if isinstance(kid, str) else "")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=algorithms_for(key),
                audience=keys.config.audience,
                issuer=keys.config.issuer,
                leeway=CLOCK_SKEW_SECONDS,
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(str(exc)) from None
        return Workload(keys.config.issuer, claims)
