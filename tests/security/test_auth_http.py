"""Authentication and authorization over HTTP: challenges, the user/repository/action matrix, tokens, limits."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from app.main import create_app
from app.settings import Settings, SettingsError
from tests.security.conftest import PASSWORDS
from tests.security.tokenflow import TokenAuth, challenge_params
from tests.support.pushing import OCI_MANIFEST, digest, image_manifest, push_blob, push_image

Serve = Callable[[Settings], str]
ALICE = ("alice", PASSWORDS["alice"])
BOB = ("bob", PASSWORDS["bob"])
CAROL = ("carol", PASSWORDS["carol"])
SOME_DIGEST = "sha256:" + "a" * 64
UPLOAD_ID = "0" * 32

# Every route of the API with a request that would be valid if the caller were allowed.
PROTECTED_ROUTES = [
    ("GET", "/v2/"),
    ("GET", "/v2/_catalog"),
    ("GET", f"/v2/team/app/blobs/{SOME_DIGEST}"),
    ("HEAD", f"/v2/team/app/blobs/{SOME_DIGEST}"),
    ("DELETE", f"/v2/team/app/blobs/{SOME_DIGEST}"),
    ("POST", "/v2/team/app/blobs/uploads/"),
    ("PATCH", f"/v2/team/app/blobs/uploads/{UPLOAD_ID}"),
    ("PUT", f"/v2/team/app/blobs/uploads/{UPLOAD_ID}?digest={SOME_DIGEST}"),
    ("GET", f"/v2/team/app/blobs/uploads/{UPLOAD_ID}"),
    ("DELETE", f"/v2/team/app/blobs/uploads/{UPLOAD_ID}"),
    ("GET", "/v2/team/app/manifests/latest"),
    ("HEAD", "/v2/team/app/manifests/latest"),
    ("PUT", "/v2/team/app/manifests/latest"),
    ("DELETE", "/v2/team/app/manifests/latest"),
    ("GET", "/v2/team/app/tags/list"),
    ("GET", f"/v2/team/app/referrers/{SOME_DIGEST}"),
]


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    if response.request.method != "HEAD":
        assert response.json()["errors"][0]["code"] == code


# htpasswd --------------------------------------------------------------------------------------------


def test_every_protected_route_challenges_anonymous_callers(
    auth_settings: Callable[..., Settings], serve: Serve
) -> None:
    url = serve(auth_settings(auth_anonymous_pull=False))
    with httpx.Client(base_url=url) as client:
        for method, path in PROTECTED_ROUTES:
            response = client.request(method, path)
            assert_error(response, 401, "UNAUTHORIZED")
            assert response.headers["www-authenticate"] == 'Basic realm="storj-registry"', (method, path)
            assert response.headers["docker-distribution-api-version"] == "registry/2.0"
        for path in ("/healthz", "/readyz", "/metrics"):
            assert client.get(path).status_code in (200, 503), path  # open to probes and scrapers
        assert client.get("/auth/token").status_code == 404  # no token service without token auth


def test_users_get_what_the_rules_give_them(auth_settings: Callable[..., Settings], serve: Serve) -> None:
    url = serve(auth_settings(delete_enabled=True))
    with httpx.Client(base_url=url) as client:
        assert client.get("/v2/", auth=ALICE).status_code == 200
        assert_error(client.get("/v2/", auth=("alice", "wrong")), 401, "UNAUTHORIZED")
        assert_error(client.get("/v2/", auth=("mallory", "x")), 401, "UNAUTHORIZED")
        assert_error(client.get("/v2/", headers={"Authorization": "Basic !!notbase64"}), 401, "UNAUTHORIZED")
        assert_error(client.get("/v2/", headers={"Authorization": "Digest x"}), 401, "UNAUTHORIZED")

        bob = httpx.Client(base_url=url, auth=BOB)
        carol = httpx.Client(base_url=url, auth=CAROL)
        image = push_image(bob, "team/app", "v1")
        assert_error(bob.post("/v2/other/app/blobs/uploads/"), 403, "DENIED")
        assert_error(carol.post("/v2/team/app/blobs/uploads/"), 403, "DENIED")
        assert_error(carol.put("/v2/team/app/manifests/v2", content=image.manifest), 403, "DENIED")
        assert carol.get("/v2/team/app/manifests/v1").content == image.manifest
        assert carol.get("/v2/team/app/tags/list").json()["tags"] == ["v1"]
        assert_error(carol.get("/v2/other/app/tags/list"), 403, "DENIED")
        assert_error(bob.delete("/v2/team/app/manifests/v1"), 403, "DENIED")
        assert_error(client.post("/v2/team/app/blobs/uploads/"), 401, "UNAUTHORIZED")
        assert client.delete("/v2/team/app/manifests/v1", auth=ALICE).status_code == 202


def test_upload_sessions_need_push_for_every_step(auth_settings: Callable[..., Settings], serve: Serve) -> None:
    """Status and cancel of a session are part of pushing: a pull-only user cannot peek at or kill them."""
    url = serve(auth_settings())
    with httpx.Client(base_url=url, auth=BOB) as bob, httpx.Client(base_url=url, auth=CAROL) as carol:
        location = bob.post("/v2/team/app/blobs/uploads/").headers["location"]
        for method in ("GET", "PATCH", "PUT", "DELETE"):
            assert_error(carol.request(method, location), 403, "DENIED")
        assert bob.get(location).status_code == 204


def test_catalog_is_for_users_who_may_read_everything(auth_settings: Callable[..., Settings], serve: Serve) -> None:
    url = serve(auth_settings())
    with httpx.Client(base_url=url) as client:
        push_image(httpx.Client(base_url=url, auth=BOB), "team/app", "v1")
        assert client.get("/v2/_catalog", auth=ALICE).json() == {"repositories": ["team/app"]}
        assert_error(client.get("/v2/_catalog", auth=BOB), 403, "DENIED")
        assert_error(client.get("/v2/_catalog"), 401, "UNAUTHORIZED")


def test_anonymous_pull_opens_reads_only(auth_settings: Callable[..., Settings], serve: Serve) -> None:
    url = serve(auth_settings(auth_anonymous_pull=True))
    with httpx.Client(base_url=url) as anonymous:
        image = push_image(httpx.Client(base_url=url, auth=BOB), "team/app", "v1")
        assert anonymous.get("/v2/team/app/manifests/v1").content == image.manifest
        assert anonymous.get(f"/v2/team/app/blobs/{digest(image.config)}").content == image.config
        assert anonymous.get("/v2/_catalog").status_code == 200
        assert_error(anonymous.post("/v2/team/app/blobs/uploads/"), 401, "UNAUTHORIZED")
        # `docker login` must still be able to tell a right password from a wrong one.
        assert_error(anonymous.get("/v2/"), 401, "UNAUTHORIZED")
        assert_error(anonymous.get("/v2/team/app/manifests/v1", auth=("bob", "wrong")), 401, "UNAUTHORIZED")


def test_mount_needs_pull_on_the_source_and_never_leaks_the_blob(
    auth_settings: Callable[..., Settings], serve: Serve
) -> None:
    url = serve(auth_settings())
    with httpx.Client(base_url=url, auth=ALICE) as alice, httpx.Client(base_url=url, auth=BOB) as bob:
        secret = push_blob(alice, "secret/app", b"the secret layer")
        mounted = bob.post("/v2/team/app/blobs/uploads/", params={"mount": secret, "from": "secret/app"})
        assert mounted.status_code == 202, mounted.text  # a normal session instead
        assert "/blobs/uploads/" in mounted.headers["location"]
        assert_error(bob.head(f"/v2/team/app/blobs/{secret}"), 404, "BLOB_UNKNOWN")
        shared = push_blob(bob, "team/base", b"a shared layer")
        mounted = bob.post("/v2/team/app/blobs/uploads/", params={"mount": shared, "from": "team/base"})
        assert mounted.status_code == 201, mounted.text
        mounted = alice.post("/v2/team/app/blobs/uploads/", params={"mount": secret, "from": "secret/app"})
        assert mounted.status_code == 201, mounted.text


def test_failed_logins_are_rate_limited_per_address(auth_settings: Callable[..., Settings], serve: Serve) -> None:
    url = serve(auth_settings(auth_max_failures=3, auth_token_enabled=True))
    with httpx.Client(base_url=url) as client:
        for _ in range(3):
            assert_error(client.get("/v2/", auth=("bob", "guess")), 401, "UNAUTHORIZED")
        for attempt in (("bob", "guess"), BOB):  # blocked: not even the right password is checked
            refused = client.get("/v2/team/app/tags/list", auth=attempt)
            assert_error(refused, 429, "TOOMANYREQUESTS")
            assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert_error(client.get("/auth/token", auth=BOB), 429, "TOOMANYREQUESTS")
        # a forged X-Forwarded-For from an untrusted peer does not buy a fresh address
        forged = client.get("/v2/", auth=BOB, headers={"X-Forwarded-For": "203.0.113.9"})
        assert_error(forged, 429, "TOOMANYREQUESTS")


def test_credentials_and_tokens_never_reach_the_logs(
    auth_settings: Callable[..., Settings], serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url = serve(auth_settings(auth_token_enabled=True))
    with httpx.Client(base_url=url, auth=TokenAuth(*BOB)) as bob:
        push_image(bob, "team/app", "v1")
        token = bob.auth.token  # type: ignore[attr-defined]
        httpx.get(f"{url}/v2/", auth=("bob", "a-wrong-password"))
    service_records = [r for r in caplog.records if r.name.startswith(("storj_registry", "uvicorn", "app"))]
    assert service_records  # the service did log these requests
    logged = "\n".join(f"{record.getMessage()} {record.args} {record.__dict__}" for record in service_records)
    for secret in (PASSWORDS["bob"], "a-wrong-password", token):
        assert secret and secret not in logged


# tokens ----------------------------------------------------------------------------------------------


def test_token_flow_grants_requested_actions_the_rules_allow(
    auth_settings: Callable[..., Settings], serve: Serve
) -> None:
    url = serve(auth_settings(auth_token_enabled=True, auth_token_service="registry.test"))
    with httpx.Client(base_url=url) as client:
        challenge = client.get("/v2/").headers["www-authenticate"]
        assert challenge == f'Bearer realm="{url}/auth/token",service="registry.test"'
        challenged = client.post("/v2/team/app/blobs/uploads/")
        assert_error(challenged, 401, "UNAUTHORIZED")
        assert challenge_params(challenged.headers["www-authenticate"])["scope"] == "repository:team/app:pull,push"

        scopes = {"service": "registry.test", "scope": ["repository:team/app:pull,push", "repository:x/y:pull"]}
        answer = client.get("/auth/token", params=scopes, auth=CAROL)
        assert answer.status_code == 200 and answer.headers["cache-control"] == "no-store"
        body = answer.json()
        assert body["token"] == body["access_token"] and 0 < body["expires_in"] <= 300 and body["issued_at"]
        claims = jwt.decode(body["token"], options={"verify_signature": False})
        assert claims["sub"] == "carol" and claims["aud"] == "registry.test"
        assert claims["access"] == [{"type": "repository", "name": "team/app", "actions": ["pull"]}]

        carol = {"Authorization": f"Bearer {body['token']}"}
        denied = client.post("/v2/team/app/blobs/uploads/", headers=carol)
        assert_error(denied, 403, "DENIED")
        params = challenge_params(denied.headers["www-authenticate"])
        assert params["error"] == "insufficient_scope" and params["scope"] == "repository:team/app:pull,push"
        assert client.get("/v2/", headers=carol).status_code == 200

        assert_error(client.get("/auth/token", params=scopes, auth=("carol", "wrong")), 401, "UNAUTHORIZED")
        assert client.get("/auth/token", params={"service": "other"}, auth=CAROL).status_code == 400


def test_push_and_pull_through_the_token_flow(auth_settings: Callable[..., Settings], serve: Serve) -> None:
    """A client that first holds a pull token gets a 403 with the wider scope, asks again, and pushes (oras)."""
    url = serve(auth_settings(auth_token_enabled=True))
    with httpx.Client(base_url=url, auth=TokenAuth(*BOB)) as bob:
        assert bob.head("/v2/team/app/manifests/v1").status_code == 404  # a pull token first
        image = push_image(bob, "team/app", "v1")
        assert bob.get("/v2/team/app/manifests/v1").content == image.manifest
    with httpx.Client(base_url=url, auth=TokenAuth(*CAROL)) as carol:
        assert carol.get("/v2/team/app/manifests/v1").status_code == 200
        assert_error(carol.post("/v2/team/app/blobs/uploads/"), 403, "DENIED")
    with httpx.Client(base_url=url, auth=TokenAuth()) as anonymous:
        assert_error(anonymous.get("/v2/team/app/manifests/v1"), 401, "UNAUTHORIZED")


def test_anonymous_tokens_carry_pull_when_anonymous_pull_is_on(
    auth_settings: Callable[..., Settings], serve: Serve
) -> None:
    url = serve(auth_settings(auth_token_enabled=True, auth_anonymous_pull=True))
    push_image(httpx.Client(base_url=url, auth=TokenAuth(*BOB)), "team/app", "v1")
    with httpx.Client(base_url=url, auth=TokenAuth()) as anonymous:
        assert anonymous.get("/v2/team/app/manifests/v1").status_code == 200
        assert_error(anonymous.post("/v2/team/app/blobs/uploads/"), 401, "UNAUTHORIZED")


def test_oauth_password_grant(auth_settings: Callable[..., Settings], serve: Serve) -> None:
    """containerd POSTs an OAuth2 password grant before it falls back to GET."""
    url = serve(auth_settings(auth_token_enabled=True))
    form = {"grant_type": "password", "username": "bob", "password": PASSWORDS["bob"], "service": "storj-registry"}
    with httpx.Client(base_url=url) as client:
        answer = client.post("/auth/token", data={**form, "scope": "repository:team/app:pull,push"})
        assert answer.status_code == 200, answer.text
        token = answer.json()["access_token"]
        started = client.post("/v2/team/app/blobs/uploads/", headers={"Authorization": f"Bearer {token}"})
        assert started.status_code == 202
        assert_error(client.post("/auth/token", data={**form, "password": "wrong"}), 401, "UNAUTHORIZED")
        assert client.post("/auth/token", data={**form, "grant_type": "refresh_token"}).status_code == 400
        assert_error(client.post("/auth/token", content=b"x" * 100_000), 413, "SIZE_INVALID")


def test_forged_and_expired_tokens_are_refused(auth_settings: Callable[..., Settings], serve: Serve) -> None:
    url = serve(auth_settings(auth_token_enabled=True))
    stranger = ec.generate_private_key(ec.SECP256R1())
    claims = {
        "iss": "storj-registry",
        "aud": "storj-registry",
        "sub": "alice",
        "exp": int(time.time()) + 60,
        "access": [{"type": "repository", "name": "team/app", "actions": ["push"]}],
    }
    forged = jwt.encode(claims, stranger, algorithm="ES256")
    with httpx.Client(base_url=url) as client:
        for token in (forged, "not.a.token", "x"):
            refused = client.post("/v2/team/app/blobs/uploads/", headers={"Authorization": f"Bearer {token}"})
            assert_error(refused, 401, "UNAUTHORIZED")
        assert 'error="invalid_token"' in refused.headers["www-authenticate"]


@pytest.mark.parametrize("form", ["pem", "jwks"])
def test_tokens_of_an_external_issuer(
    auth_settings: Callable[..., Settings], serve: Serve, tmp_path: Path, form: str
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key()
    if form == "pem":
        trust = tmp_path / "issuer.pem"
        trust.write_bytes(
            public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        )
        extra: dict[str, object] = {"auth_token_public_key": trust}
    else:
        trust = tmp_path / "jwks.json"
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(public))
        trust.write_text(json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig"}]}))
        extra = {"auth_token_jwks": trust}
    realm = "https://auth.example.com/token"
    settings = auth_settings(
        auth_token_enabled=True, auth_token_realm=realm, auth_token_issuer="corp-sso", auth_token_service="reg", **extra
    )
    url = serve(settings)
    claims = {
        "iss": "corp-sso",
        "aud": "reg",
        "sub": "dave",
        "exp": int(time.time()) + 60,
        "access": [{"type": "repository", "name": "dave/app", "actions": ["pull", "push"]}],
    }
    token = jwt.encode(claims, key, algorithm="ES256", headers={"kid": "k1"})
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as dave:
        assert dave.post("/v2/dave/app/blobs/uploads/").status_code == 202
        denied = dave.post("/v2/team/app/blobs/uploads/")
        assert_error(denied, 403, "DENIED")
        assert challenge_params(denied.headers["www-authenticate"])["realm"] == realm
        assert dave.get("/auth/token").status_code == 404  # the external issuer hands out tokens, not us
    wrong_issuer = jwt.encode({**claims, "iss": "someone"}, key, algorithm="ES256", headers={"kid": "k1"})
    response = httpx.post(f"{url}/v2/dave/app/blobs/uploads/", headers={"Authorization": f"Bearer {wrong_issuer}"})
    assert_error(response, 401, "UNAUTHORIZED")


def test_a_token_key_file_makes_tokens_outlive_the_process(
    auth_settings: Callable[..., Settings], serve: Serve, tmp_path: Path
) -> None:
    """Two replicas (or a restart) with the same key accept each other's tokens."""
    key_file = tmp_path / "token.key"
    key = ec.generate_private_key(ec.SECP384R1())
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    first = serve(auth_settings(auth_token_enabled=True, auth_token_key=key_file))
    second = serve(auth_settings(auth_token_enabled=True, auth_token_key=key_file))
    token = httpx.get(f"{first}/auth/token", params={"scope": "repository:team/app:push"}, auth=BOB).json()["token"]
    assert jwt.get_unverified_header(token)["alg"] == "ES384"
    started = httpx.post(f"{second}/v2/team/app/blobs/uploads/", headers={"Authorization": f"Bearer {token}"})
    assert started.status_code == 202


# start-up --------------------------------------------------------------------------------------------


def test_bad_auth_files_stop_the_service_naming_the_variable(
    auth_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    md5 = tmp_path / "htpasswd"
    md5.write_text("alice:$apr1$abcdefgh$0123456789abcdefghijkl\n")
    with pytest.raises(SettingsError, match=r"REGISTRY_AUTH_HTPASSWD: line 1 .*bcrypt"):
        create_app(auth_settings(auth_htpasswd=md5))
    rules = tmp_path / "access.yaml"
    rules.write_text("rules: [{users: [a], repositories: ['*'], actions: [write]}]")
    with pytest.raises(SettingsError, match="REGISTRY_AUTH_ACCESS: rule 1"):
        create_app(auth_settings(auth_access=rules))
    with pytest.raises(SettingsError, match="REGISTRY_AUTH_TOKEN_KEY"):
        create_app(auth_settings(auth_token_enabled=True, auth_token_key=md5))


def test_without_auth_the_service_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    create_app(Settings(storage="filesystem", data_dir=tmp_path / "d", staging_dir=tmp_path / "s"))
    assert any("authentication is OFF" in record.getMessage() for record in caplog.records)


def test_a_manifest_naming_another_repositorys_blob_is_not_a_way_to_reach_it(
    auth_settings: Callable[..., Settings], serve: Serve
) -> None:
    """Blobs are per repository: referencing a digest pushed elsewhere does not make it readable here."""
    url = serve(auth_settings())
    with httpx.Client(base_url=url, auth=ALICE) as alice, httpx.Client(base_url=url, auth=BOB) as bob:
        secret = push_image(alice, "secret/app", "v1")
        manifest = image_manifest(secret.config, secret.layers)
        response = bob.put("/v2/team/app/manifests/v1", content=manifest, headers={"Content-Type": OCI_MANIFEST})
        assert_error(response, 400, "MANIFEST_BLOB_UNKNOWN")
        assert_error(bob.get(f"/v2/team/app/blobs/{digest(secret.config)}"), 404, "BLOB_UNKNOWN")
