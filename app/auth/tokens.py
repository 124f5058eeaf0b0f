"""Bearer tokens of the Docker registry token flow: short-lived JWTs whose `access` claim lists what they allow.

The service signs its own tokens (`/auth/token`) with an RSA, EC or Ed25519 key, or verifies tokens of an
external issuer against its public key or a JWKS file. Algorithms are fixed by the key type, never taken from
the token, so `none` and HMAC confusion attacks have nothing to work with.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from app.registry.references import NAME_RE

REPOSITORY, REGISTRY, CATALOG = "repository", "registry", "catalog"
CLOCK_SKEW_SECONDS = 30
MIN_RSA_BITS = 2048

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey


class TokenKeyError(ValueError):
    """A key file cannot be used; the message says why."""


class InvalidToken(Exception):
    """The token is malformed, expired, not ours, or signed by another key."""


@dataclass(frozen=True)
class Access:
    """One entry of the `access` claim, and one `scope` of a token request: `type:name:action,action`."""

    type: str
    name: str
    actions: frozenset[str]

    @property
    def scope(self) -> str:
        return f"{self.type}:{self.name}:{','.join(sorted(self.actions))}"

    def claim(self) -> dict[str, Any]:
        return {"type": self.type, "name": self.name, "actions": sorted(self.actions)}


def parse_scope(scope: str) -> Access | None:
    """`repository:team/app:pull,push` or `registry:catalog:*`; anything else (or a bad name) is None."""
    kind, _, rest = scope.partition(":")
    name, _, actions = rest.rpartition(":")
    wanted = frozenset(action for action in actions.split(",") if action)
    if kind == REPOSITORY and NAME_RE.fullmatch(name) and wanted:
        return Access(kind, name, wanted)
    if kind == REGISTRY and name == CATALOG and wanted:
        return Access(kind, name, wanted)
    return None


@dataclass(frozen=True)
class Claims:
    subject: str | None
    access: tuple[Access, ...]

    def actions(self, kind: str, name: str) -> frozenset[str]:
        granted: set[str] = set()
        for entry in self.access:
            if entry.type == kind and entry.name == name:
                granted |= entry.actions
        return frozenset(granted)


# keys -----------------------------------------------------------------------------------------------


def load_private_key(path: Path | None) -> tuple[PrivateKey, bool]:
    """The signing key from a PEM file, or a fresh P-256 key (True: ephemeral) when no file is set."""
    if path is None:
        return ec.generate_private_key(ec.SECP256R1()), True
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise TokenKeyError(f"cannot load a PEM private key (unencrypted) from {path}: {exc}") from None
    if not isinstance(key, PrivateKey):
        raise TokenKeyError(f"{path}: use an RSA, EC or Ed25519 key")
    _check_strength(key.public_key(), path)
    return key, False


def load_public_key(path: Path) -> PublicKey:
    """An external issuer's key, as a PEM public key or an X.509 certificate."""
    try:
        data = path.read_bytes()
        key = (
            x509.load_pem_x509_certificate(data).public_key()
            if b"CERTIFICATE" in data
            else serialization.load_pem_public_key(data)
        )
    except (OSError, ValueError) as exc:
        raise TokenKeyError(f"cannot load a PEM public key or certificate from {path}: {exc}") from None
    if not isinstance(key, PublicKey):
        raise TokenKeyError(f"{path}: use an RSA, EC or Ed25519 key")
    _check_strength(key, path)
    return key


def load_jwks(path: Path) -> dict[str, PublicKey]:
    """Keys of a JWKS file by `kid` (a lone key without `kid` is filed under "")."""
    try:
        jwk_set = jwt.PyJWKSet.from_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, jwt.PyJWTError) as exc:
        raise TokenKeyError(f"cannot load a JWKS from {path}: {exc}") from None
    found = keys_by_id(jwk_set)
    if not found:
        raise TokenKeyError(f"{path}: no RSA (2048 bits or more), EC or Ed25519 public key in the JWKS")
    return found


def keys_by_id(jwk_set: jwt.PyJWKSet) -> dict[str, PublicKey]:
    """The usable public keys of a JWKS by `kid` ("" for a key without one); secrets and weak RSA keys left out."""
    return {
        jwk.key_id or "": jwk.key
        for jwk in jwk_set.keys
        if isinstance(jwk.key, PublicKey)
        and not (isinstance(jwk.key, rsa.RSAPublicKey) and jwk.key.key_size < MIN_RSA_BITS)
    }


def _check_strength(key: PublicKey, path: Path) -> None:
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        raise TokenKeyError(f"{path}: RSA keys need at least {MIN_RSA_BITS} bits")


def algorithms_for(key: PublicKey) -> list[str]:
    if isinstance(key, rsa.RSAPublicKey):
        return ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"]
    if isinstance(key, ec.EllipticCurvePublicKey):
        return [{"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}.get(key.curve.name, "ES256")]
    return ["EdDSA"]


def key_id(key: PublicKey) -> str:
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()[:32]


# issuing and verifying ---------------------------------------------------------------------------------


class TokenIssuer:
    def __init__(self, key: PrivateKey, issuer: str, service: str, ttl_seconds: int) -> None:
        self.key = key
        self.algorithm = algorithms_for(key.public_key())[0]
        self.kid = key_id(key.public_key())
        self.issuer = issuer
        self.service = service
        self.ttl = ttl_seconds

    def issue(self, subject: str | None, access: list[Access]) -> dict[str, Any]:
        """The token endpoint's answer: the JWT under both names clients look for, and its lifetime."""
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": subject or "",
            "aud": self.service,
            "iat": now,
            "nbf": now - CLOCK_SKEW_SECONDS,
            "exp": now + self.ttl,
            "jti": secrets.token_hex(16),
            "access": [entry.claim() for entry in access],
        }
        token = jwt.encode(claims, self.key, algorithm=self.algorithm, headers={"kid": self.kid})
        issued_at = datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z")
        return {"token": token, "access_token": token, "expires_in": self.ttl, "issued_at": issued_at}

    def verifier(self) -> TokenVerifier:
        return TokenVerifier({self.kid: self.key.public_key()}, self.issuer, self.service)


class TokenVerifier:
    """Checks signature, issuer, audience (the service) and lifetime, then reads the `access` claim."""

    def __init__(self, keys: dict[str, PublicKey], issuer: str, audience: str) -> None:
        self.keys = keys
        self.issuer = issuer
        self.audience = audience

    def verify(self, token: str) -> Claims:
        try:
            key = self._key_for(jwt.get_unverified_header(token))
            claims = jwt.decode(
                token,
                key,
                algorithms=algorithms_for(key),
                audience=self.audience,
                issuer=self.issuer,
                leeway=CLOCK_SKEW_SECONDS,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(str(exc)) from None
        return Claims(claims.get("sub") or None, _access_claim(claims.get("access", [])))

    def _key_for(self, header: dict[str, Any]) -> PublicKey:
        kid = header.get("kid")
        if isinstance(kid, str) and kid in self.keys:
            return self.keys[kid]
        if len(self.keys) == 1:
            return next(iter(self.keys.values()))
        raise InvalidToken("unknown signing key")


def _access_claim(value: Any) -> tuple[Access, ...]:
    if not isinstance(value, list):
        raise InvalidToken("access claim must be a list")
    entries = []
    for item in value:
        try:
            actions = item["actions"]
            if not isinstance(actions, list) or not all(isinstance(action, str) for action in actions):
                raise TypeError
            entries.append(Access(str(item["type"]), str(item["name"]), frozenset(actions)))
        except (KeyError, TypeError) as exc:
            raise InvalidToken(f"malformed access entry: {json.dumps(item)[:200]}") from exc
    return tuple(entries)
