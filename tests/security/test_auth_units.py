"""htpasswd parsing, access rules and tokens, without a server."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from app.auth.access import AccessError, AccessRules, parse
from app.auth.htpasswd import Htpasswd, HtpasswdError
from app.auth.ratelimit import FailureLimiter, UploadLimiter
from app.auth.tokens import (
    Access,
    InvalidToken,
    TokenIssuer,
    TokenKeyError,
    TokenVerifier,
    load_jwks,
    load_private_key,
    load_public_key,
    parse_scope,
)
from app.errors import TooManyRequests
from app.settings import SettingsError, load_settings
from tests.security.conftest import ACCESS, htpasswd_line

# htpasswd ---------------------------------------------------------------------------------------------


def test_htpasswd_accepts_bcrypt_entries_as_htpasswd_writes_them(tmp_path: Path) -> None:
    path = tmp_path / "htpasswd"
    path.write_text(f"# comment\n\n{htpasswd_line('alice', 'pw')}\n")
    users = Htpasswd.load(path)
    assert users.verify("alice", "pw")
    assert not users.verify("alice", "wrong")
    assert not users.verify("nobody", "pw")
    assert not users.verify("", "")


@pytest.mark.parametrize(
    "entry",
    [
        "alice:$apr1$abcdefgh$0123456789abcdefghijkl",  # htpasswd -m (MD5)
        "alice:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=",  # htpasswd -s
        "alice:abJnggxhB/yWI",  # crypt
        "alice:plaintext",
        "no-colon-here",
    ],
)
def test_htpasswd_refuses_weak_or_malformed_entries_naming_the_line(tmp_path: Path, entry: str) -> None:
    path = tmp_path / "htpasswd"
    path.write_text(htpasswd_line("bob", "pw") + "\n" + entry + "\n")
    with pytest.raises(HtpasswdError, match="line 2"):
        Htpasswd.load(path)


def test_htpasswd_passwords_past_72_bytes_behave_as_htpasswd_hashed_them(tmp_path: Path) -> None:
    """bcrypt reads 72 bytes; htpasswd truncates when hashing, so the same password must verify."""
    long_password = "x" * 100
    path = tmp_path / "htpasswd"
    path.write_text(htpasswd_line("alice", long_password[:72]) + "\n")
    assert Htpasswd.load(path).verify("alice", long_password)


def test_unknown_users_cost_a_bcrypt_check_too(tmp_path: Path) -> None:
    path = tmp_path / "htpasswd"
    path.write_text(htpasswd_line("alice", "pw").replace("$04$", "$08$") + "\n")
    users = Htpasswd.load(path)
    timings = {}
    for user in ("alice", "mallory"):
        started = time.perf_counter()
        users.verify(user, "wrong")
        timings[user] = time.perf_counter() - started
    assert timings["mallory"] > timings["alice"] / 3


# access rules -----------------------------------------------------------------------------------------


def test_rules_union_groups_patterns_and_push_implies_pull(tmp_path: Path) -> None:
    path = tmp_path / "access.yaml"
    path.write_text(ACCESS)
    rules = AccessRules.load(path)
    assert rules.actions("alice", "anything/at/all") == {"pull", "push", "delete"}
    assert rules.actions("bob", "team/app") == {"pull", "push"}
    assert rules.actions("bob", "team/deep/app") == {"pull", "push"}
    assert rules.actions("bob", "other/app") == set()
    assert rules.actions("carol", "team/app") == {"pull"}
    assert rules.actions(None, "team/app") == set()
    assert rules.may_list_catalog("alice") and not rules.may_list_catalog("bob")


def test_without_a_rules_file_every_authenticated_user_may_do_everything() -> None:
    rules = AccessRules.allow_everyone()
    assert rules.actions("anyone", "x/y") == {"pull", "push", "delete"}
    assert rules.actions(None, "x/y") == set()


@pytest.mark.parametrize(
    "document",
    [
        [],
        {"rules": [{"users": ["a"], "repositories": ["*"], "actions": ["write"]}]},
        {"rules": [{"users": ["a"], "repositories": [], "actions": ["pull"]}]},
        {"rules": [{"repositories": ["*"], "actions": ["pull"]}]},
        {"rules": [{"groups": ["ghosts"], "repositories": ["*"], "actions": ["pull"]}]},
        {"rules": [{"users": "alice", "repositories": ["*"], "actions": ["pull"]}]},
        {"rules": [{"users": ["a"], "repositories": ["*"], "actions": ["pull"], "typo": 1}]},
        {"rulez": []},
    ],
)
def test_malformed_rules_are_refused(document: object) -> None:
    with pytest.raises(AccessError):
        parse(document)


# tokens -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        ("repository:team/app:pull,push", Access("repository", "team/app", frozenset({"pull", "push"}))),
        ("repository:a:*", Access("repository", "a", frozenset({"*"}))),
        ("registry:catalog:*", Access("registry", "catalog", frozenset({"*"}))),
        ("repository:../etc:pull", None),
        ("repository:Team/App:pull", None),
        ("repository:team/app:", None),
        ("repository(plugin):x:pull", None),
        ("nonsense", None),
        ("", None),
    ],
)
def test_scope_parsing(scope: str, expected: Access | None) -> None:
    assert parse_scope(scope) == expected


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def issuer(key=None) -> TokenIssuer:  # type: ignore[no-untyped-def]
    return TokenIssuer(key or ec.generate_private_key(ec.SECP256R1()), "me", "registry", 300)


def test_tokens_round_trip_with_their_access() -> None:
    signer = issuer()
    access = [Access("repository", "team/app", frozenset({"pull"}))]
    answer = signer.issue("bob", access)
    assert answer["token"] == answer["access_token"] and answer["expires_in"] == 300
    assert answer["issued_at"].endswith("Z")
    claims = signer.verifier().verify(answer["token"])
    assert claims.subject == "bob"
    assert claims.actions("repository", "team/app") == {"pull"}
    assert claims.actions("repository", "team/other") == set()


def test_tokens_of_other_keys_issuers_audiences_or_past_expiry_are_refused() -> None:
    signer = issuer()
    verifier = signer.verifier()
    with pytest.raises(InvalidToken):
        verifier.verify(issuer().issue("bob", [])["token"])  # another key
    with pytest.raises(InvalidToken):
        TokenVerifier(verifier.keys, "someone-else", "registry").verify(signer.issue("bob", [])["token"])
    with pytest.raises(InvalidToken):
        TokenVerifier(verifier.keys, "me", "other-service").verify(signer.issue("bob", [])["token"])
    expired = jwt.encode(
        {"iss": "me", "aud": "registry", "exp": int(time.time()) - 120, "access": []},
        signer.key,
        algorithm="ES256",
    )
    with pytest.raises(InvalidToken):
        verifier.verify(expired)


def test_unsigned_and_hmac_tokens_are_refused_whatever_their_header_says() -> None:
    """`alg: none`, and HS256 keyed with the public key (the classic confusion attack)."""
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    verifier = issuer(rsa_key).verifier()
    claims = {"iss": "me", "aud": "registry", "exp": int(time.time()) + 60, "access": []}
    unsigned = jwt.encode(claims, None, algorithm="none")
    with pytest.raises(InvalidToken):
        verifier.verify(unsigned)
    public_pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    signing_input = f"{header}.{b64url(json.dumps(claims).encode())}"
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    forged = f"{signing_input}.{b64url(signature)}"
    with pytest.raises(InvalidToken):
        verifier.verify(forged)


def test_malformed_access_claims_are_refused() -> None:
    signer = issuer()
    token = jwt.encode(
        {"iss": "me", "aud": "registry", "exp": int(time.time()) + 60, "access": [{"type": "repository"}]},
        signer.key,
        algorithm="ES256",
    )
    with pytest.raises(InvalidToken):
        signer.verifier().verify(token)


def test_key_files(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = tmp_path / "key.pem"
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    loaded, ephemeral = load_private_key(private)
    assert not ephemeral and isinstance(loaded, rsa.RSAPrivateKey)
    assert load_private_key(None)[1]
    public = tmp_path / "pub.pem"
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    assert isinstance(load_public_key(public), rsa.RSAPublicKey)
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    private.write_bytes(
        weak.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    with pytest.raises(TokenKeyError, match="2048"):
        load_private_key(private)
    with pytest.raises(TokenKeyError):
        load_public_key(tmp_path / "missing.pem")
    jwks = tmp_path / "jwks.json"
    jwks.write_text('{"keys": []}')
    with pytest.raises(TokenKeyError):
        load_jwks(jwks)


# limiters ---------------------------------------------------------------------------------------------


def test_failure_limiter_blocks_after_the_limit_with_retry_after() -> None:
    limiter = FailureLimiter(3, window=60)
    for _ in range(3):
        limiter.check("10.0.0.1")
        limiter.record("10.0.0.1")
    with pytest.raises(TooManyRequests) as refused:
        limiter.check("10.0.0.1")
    assert 1 <= int(refused.value.headers["Retry-After"]) <= 60
    limiter.check("10.0.0.2")  # other addresses are not affected


def test_failure_limiter_counts_checks_in_flight_and_gives_back_successes() -> None:
    limiter = FailureLimiter(2, window=60)
    first, second = limiter.reserve("a"), limiter.reserve("a")  # two checks running: no slot for a third
    with pytest.raises(TooManyRequests):
        limiter.reserve("a")
    limiter.release("a", first)  # it succeeded
    limiter.reserve("a")
    with pytest.raises(TooManyRequests):
        limiter.check("a")
    assert second is not None


def test_failure_limiter_forgets_old_failures() -> None:
    limiter = FailureLimiter(2, window=0.05)
    limiter.record("a")
    limiter.record("a")
    time.sleep(0.06)
    limiter.check("a")


def test_upload_limiter_counts_per_address_and_releases() -> None:
    limiter = UploadLimiter(1)
    with limiter.hold("a"), limiter.hold("b"), pytest.raises(TooManyRequests), limiter.hold("a"):
        pass
    with limiter.hold("a"):
        pass


# settings ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"auth_token_enabled": True}, "REGISTRY_AUTH_TOKEN_ENABLED needs REGISTRY_AUTH_HTPASSWD"),
        ({"auth_token_enabled": True, "auth_token_public_key": "k.pem"}, "needs REGISTRY_AUTH_TOKEN_REALM"),
        ({"auth_token_public_key": "k.pem", "auth_token_realm": "https://sso/t"}, "REGISTRY_AUTH_TOKEN_ENABLED"),
        ({"auth_token_public_key": "k.pem", "auth_token_jwks": "k.json"}, "not both"),
        ({"auth_access": "rules.yaml"}, "REGISTRY_AUTH_ACCESS needs REGISTRY_AUTH_HTPASSWD"),
        ({"trusted_proxies": "10.0.0.0/8, proxy.local"}, "REGISTRY_TRUSTED_PROXIES"),
        ({"service_url": "push.example.com"}, "REGISTRY_SERVICE_URL"),
    ],
)
def test_incoherent_auth_settings_stop_the_service(settings: dict[str, object], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings(**settings)
