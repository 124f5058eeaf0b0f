"""Workload identity over HTTP: CI jobs log in with ID tokens of a local issuer, and the claim rules decide.

The issuer runs on 127.0.0.1 (tests/support/oidc_issuer.py) and serves discovery and a JWKS like GitHub's and
GitLab's. Tokens go in as the password of user `oidc`: with Basic auth on every request, or at `/auth/token`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from app.auth.access import AccessError, parse
from app.auth.oidc import Workload
from app.main import create_app
from app.settings import Settings, SettingsError, load_settings
from tests.conftest import filesystem_settings
from tests.security.tokenflow import TokenAuth
from tests.support.oidc_issuer import DISCOVERY, JWKS, Issuer, running_issuer
from tests.support.pushing import push_image
from tests.support.tools import free_port

Serve = Callable[[Settings], str]
AUDIENCE = "registry.test"


@pytest.fixture
def github() -> Iterator[Issuer]:
    with running_issuer("RS256") as issuer:
        yield issuer


@pytest.fixture
def gitlab() -> Iterator[Issuer]:
    with running_issuer("ES256") as issuer:
        yield issuer


def rules_for(github: Issuer, gitlab: Issuer) -> str:
    """acme's GitHub repositories push acme/*, tags v* also push releases/*; GitLab's acme group pushes gl/*."""
    return f"""
rules:
  - issuer: {github.url}
    claims: {{repository_owner: acme}}
    repositories: ["acme/*"]
    actions: [push]
  - issuer: {github.url}
    claims: {{repository_owner: acme, ref: "refs/tags/v*"}}
    repositories: ["releases/*"]
    actions: [push]
  - issuer: {gitlab.url}
    claims: {{namespace_path: acme, ref_protected: "true"}}
    repositories: ["gl/*"]
    actions: [push, delete]
"""


@pytest.fixture
def oidc_settings(tmp_path: Path, github: Issuer, gitlab: Issuer) -> Callable[..., Settings]:
    def make(**extra: object) -> Settings:
        access = tmp_path / "access.yaml"
        access.write_text(rules_for(github, gitlab))
        issuers = [
            {"issuer": github.url, "audience": AUDIENCE},
            {"issuer": gitlab.url, "audience": AUDIENCE},
        ]
        return filesystem_settings(
            tmp_path, auth_access=access, auth_oidc_issuers=issuers, auth_max_failures=0, **extra
        )

    return make


def workload(token: str) -> tuple[str, str]:
    return ("oidc", token)


def test_github_and_gitlab_jobs_push_where_the_claim_rules_let_them(
    oidc_settings: Callable[..., Settings], serve: Serve, github: Issuer, gitlab: Issuer
) -> None:
    url = serve(oidc_settings())
    with httpx.Client(base_url=url, auth=workload(github.github(AUDIENCE))) as client:
        push_image(client, "acme/app", "main")
        assert client.get("/v2/acme/app/tags/list").json()["tags"] == ["main"]
        denied = client.post("/v2/releases/app/blobs/uploads/")  # a branch build, not a tag
        assert denied.status_code == 403 and denied.json()["errors"][0]["code"] == "DENIED"
        assert client.get("/v2/_catalog").status_code == 403
    with httpx.Client(base_url=url, auth=workload(github.github(AUDIENCE, ref="refs/tags/v1.2"))) as client:
        push_image(client, "releases/app", "v1.2")
    with httpx.Client(base_url=url, auth=workload(github.github(AUDIENCE, owner="mallory"))) as client:
        assert client.get("/v2/").status_code == 200  # a valid token: authenticated, just allowed nothing
        assert client.post("/v2/acme/app/blobs/uploads/").status_code == 403
        assert client.get("/v2/acme/app/tags/list").status_code == 403
    with httpx.Client(base_url=url, auth=workload(gitlab.gitlab(AUDIENCE))) as client:
        push_image(client, "gl/app", "main")
        assert client.post("/v2/acme/app/blobs/uploads/").status_code == 403  # GitHub's rules are not GitLab's


def b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def hand_made(header: dict[str, object], claims: dict[str, object], key: bytes | None) -> str:
    """A JWT put together by hand: unsigned, or HMAC-SHA256 with `key` (what no library will sign for us)."""
    signed = b64(json.dumps(header).encode()) + b"." + b64(json.dumps(claims).encode())
    signature = b64(hmac.new(key, signed, hashlib.sha256).digest()) if key is not None else b""
    return (signed + b"." + signature).decode()


def forged_tokens(github: Issuer, gitlab: Issuer) -> dict[str, str]:
    """Tokens that must be refused with 401, each for one reason."""
    now = int(time.time())
    kid = next(iter(github.keys))
    public_pem = github.keys[kid].public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    claims = github.claims(AUDIENCE, sub="repo:acme/app:ref:refs/heads/main", repository_owner="acme")
    good = github.sign(claims)
    stranger = Issuer(url=github.url, algorithm="RS256")
    stranger.rotate()
    return {
        "expired": github.sign({**claims, "iat": now - 900, "nbf": now - 900, "exp": now - 300}),
        "not yet valid": github.sign({**claims, "nbf": now + 300}),
        "wrong audience": github.sign({**claims, "aud": "someone-else"}),
        "unknown issuer": github.sign({**claims, "iss": "https://issuer.invalid"}),
        "another issuer's key": gitlab.sign(claims, headers={"kid": kid}),
        "alg none": hand_made({"alg": "none", "typ": "JWT"}, claims, None),
        "HMAC keyed with the public key": hand_made({"alg": "HS256", "typ": "JWT", "kid": kid}, claims, public_pem),
        "tampered": good[:-10] + ("AAAAAAAAAA" if not good.endswith("AAAAAAAAAA") else "BBBBBBBBBB"),
        "unpublished key": stranger.sign(claims),
        "no subject": github.sign({key: value for key, value in claims.items() if key != "sub"}),
        "not a JWT": "hello",
        "issuer an array": hand_made({"alg": "none"}, {**claims, "iss": [github.url]}, None),
        "issuer an object": hand_made({"alg": "none"}, {**claims, "iss": {github.url: 1}}, None),
        "alg an array": hand_made({"alg": ["RS256"], "kid": kid}, claims, None),
        "alg an object": hand_made({"alg": {"RS256": 1}, "kid": kid}, claims, None),
    }


def test_tokens_that_prove_nothing_are_refused_with_401(
    oidc_settings: Callable[..., Settings], serve: Serve, github: Issuer, gitlab: Issuer
) -> None:
    url = serve(oidc_settings(auth_token_enabled=True))
    with httpx.Client(base_url=url) as client:
        for reason, token in forged_tokens(github, gitlab).items():
            for answer in (
                client.post("/v2/acme/app/blobs/uploads/", auth=workload(token)),
                client.get("/auth/token", params={"scope": "repository:acme/app:push"}, auth=workload(token)),
                client.post("/auth/token", data={"grant_type": "password", "username": "oidc", "password": token}),
            ):
                assert answer.status_code == 401, (reason, answer.text)
                assert answer.json()["errors"][0]["code"] == "UNAUTHORIZED", reason
        assert not list((Path(oidc_settings().staging_dir)).glob("*/*")), "nothing was staged"


def test_the_token_flow_turns_an_id_token_into_a_registry_token_of_the_allowed_scope(
    oidc_settings: Callable[..., Settings], serve: Serve, github: Issuer
) -> None:
    url = serve(oidc_settings(auth_token_enabled=True, auth_token_service=AUDIENCE))
    id_token = github.github(AUDIENCE)
    scopes = {"scope": ["repository:acme/app:pull,push", "repository:releases/app:pull,push"]}
    answer = httpx.get(f"{url}/auth/token", params=scopes, auth=workload(id_token))
    assert answer.status_code == 200, answer.text
    access = jwt.decode(answer.json()["token"], options={"verify_signature": False})["access"]
    assert access == [{"type": "repository", "name": "acme/app", "actions": ["pull", "push"]}]
    form = {"grant_type": "password", "username": "oidc", "password": id_token, "scope": scopes["scope"][0]}
    assert httpx.post(f"{url}/auth/token", data=form).status_code == 200  # containerd's OAuth2 password grant
    with httpx.Client(base_url=url, auth=TokenAuth("oidc", id_token)) as client:
        push_image(client, "acme/app", "main")
        assert client.post("/v2/releases/app/blobs/uploads/").status_code == 403


def test_rotated_keys_are_fetched_once_and_invented_kids_do_not_hammer_the_issuer(
    oidc_settings: Callable[..., Settings], serve: Serve, github: Issuer, gitlab: Issuer, tmp_path: Path
) -> None:
    settings = oidc_settings()
    issuers = [entry.model_copy(update={"refresh_seconds": 2.0}) for entry in settings.auth_oidc_issuers]
    url = serve(settings.model_copy(update={"auth_oidc_issuers": tuple(issuers)}))
    with httpx.Client(base_url=url) as client:
        for _ in range(5):
            assert client.get("/v2/", auth=workload(github.github(AUDIENCE))).status_code == 200
        assert github.requests == {DISCOVERY: 1, JWKS: 1}  # keys kept, not fetched per request
        assert gitlab.requests == {}  # nor before a token of that issuer arrives
        time.sleep(2.1)  # the refresh interval of the test's issuer has passed
        github.rotate()
        for _ in range(5):
            assert client.get("/v2/", auth=workload(github.github(AUDIENCE))).status_code == 200
        assert github.requests[JWKS] == 2  # one fetch for the new kid, then it is known
        stranger = Issuer(url=github.url, algorithm="RS256")
        stranger.rotate()
        claims = github.claims(AUDIENCE, sub="x", repository_owner="acme")
        forged = [stranger.sign(claims, headers={"kid": f"invented-{number}"}) for number in range(20)]
        time.sleep(2.1)
        for token in forged:  # well within one refresh interval
            assert client.get("/v2/", auth=workload(token)).status_code == 401
        assert github.requests[JWKS] == 3  # twenty unknown kids, one fetch
        assert github.requests[DISCOVERY] == 1


def test_an_unreachable_issuer_is_a_401_not_a_500(tmp_path: Path, serve: Serve) -> None:
    issuer = Issuer(url=f"http://127.0.0.1:{free_port()}", algorithm="ES256")  # nothing listens there
    issuer.rotate()
    access = tmp_path / "access.yaml"
    rule = f"{{issuer: '{issuer.url}', claims: {{sub: '*'}}, repositories: ['*'], actions: [pull]}}"
    access.write_text(f"rules: [{rule}]")
    entry = {"issuer": issuer.url, "audience": AUDIENCE}
    url = serve(filesystem_settings(tmp_path, auth_access=access, auth_oidc_issuers=[entry], auth_max_failures=0))
    for _ in range(3):
        answer = httpx.get(f"{url}/v2/", auth=workload(issuer.gitlab(AUDIENCE)))
        assert answer.status_code == 401
        assert "could not be fetched" in answer.json()["errors"][0]["message"]


def test_keys_named_over_plain_http_elsewhere_than_loopback_are_never_fetched(
    oidc_settings: Callable[..., Settings], serve: Serve, github: Issuer
) -> None:
    """The discovery document names `http://` keys on another host: a 401, and the keys are never fetched.

    127.0.0.2 plays the other host: reachable here, but not one of the loopback names plain http is allowed for.
    """
    with running_issuer("RS256", host="127.0.0.2") as elsewhere:
        elsewhere.keys = github.keys
        github.jwks_uri = elsewhere.url + JWKS
        url = serve(oidc_settings())
        answer = httpx.get(f"{url}/v2/", auth=workload(github.github(AUDIENCE)))
        assert answer.status_code == 401
        assert "could not be fetched" in answer.json()["errors"][0]["message"]
        assert elsewhere.requests[JWKS] == 0


def test_keys_from_a_local_jwks_file(tmp_path: Path, serve: Serve) -> None:
    """Air-gapped: the issuer is never asked (its URL is not even reachable), its keys come from a file."""
    issuer = Issuer(url="https://ci.internal.example", algorithm="ES256")
    issuer.rotate()
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(issuer.jwks()))
    access = tmp_path / "access.yaml"
    access.write_text(
        f"rules: [{{issuer: '{issuer.url}', claims: {{project_path: 'acme/*'}}, "
        "repositories: ['acme/*'], actions: [push]}]"
    )
    entry = {"issuer": issuer.url, "audience": AUDIENCE, "jwks_file": str(jwks)}
    url = serve(filesystem_settings(tmp_path, auth_access=access, auth_oidc_issuers=[entry]))
    with httpx.Client(base_url=url, auth=workload(issuer.gitlab(AUDIENCE))) as client:
        push_image(client, "acme/app", "v1")


def test_htpasswd_users_and_workloads_side_by_side(
    oidc_settings: Callable[..., Settings], serve: Serve, github: Issuer, auth_files: dict[str, Path]
) -> None:
    """`users: ["*"]` is every htpasswd user, never a workload: GitHub signs tokens for every repository."""
    settings = oidc_settings(auth_htpasswd=auth_files["htpasswd"])
    access = Path(settings.auth_access or "")
    access.write_text(access.read_text() + '  - users: ["*"]\n    repositories: ["*"]\n    actions: [pull]\n')
    url = serve(settings)
    with httpx.Client(base_url=url) as client:
        assert client.get("/v2/_catalog", auth=("carol", "carol-secret")).status_code == 200
        assert client.get("/v2/_catalog", auth=workload(github.github(AUDIENCE, owner="other"))).status_code == 403
        assert client.get("/v2/", auth=("oidc", "not-a-token")).status_code == 401


# configuration ---------------------------------------------------------------------------------------


def test_claim_rules_are_checked_when_the_file_is_read() -> None:
    issuer = "https://token.actions.githubusercontent.com"
    for rule, message in (
        ({"issuer": issuer, "repositories": ["*"], "actions": ["pull"]}, "at least one claim"),
        ({"issuer": issuer, "claims": {}, "repositories": ["*"], "actions": ["pull"]}, "at least one claim"),
        ({"claims": {"sub": "x"}, "repositories": ["*"], "actions": ["pull"]}, "need an `issuer`"),
        ({"issuer": issuer, "users": ["a"], "claims": {"sub": "x"}, "repositories": ["*"], "actions": ["pull"]}, "one"),
        ({"issuer": issuer, "claims": {"sub": [1]}, "repositories": ["*"], "actions": ["pull"]}, "claims.sub"),
    ):
        with pytest.raises(AccessError, match=message):
            parse({"rules": [rule]})


def test_claim_patterns_match_strings_lists_and_json_scalars() -> None:
    issuer = "https://gitlab.example"
    rules = parse(
        {
            "rules": [
                {
                    "issuer": issuer,
                    "claims": {"groups": "acme/*", "ref_protected": "true", "project_id": ["1", "42"]},
                    "repositories": ["acme/*"],
                    "actions": ["push"],
                }
            ]
        }
    )
    claims = {"groups": ["other", "acme/devs"], "ref_protected": True, "project_id": 42, "sub": "x"}
    assert rules.actions("x", "acme/app", Workload(issuer, claims)) == {"pull", "push"}
    assert rules.actions("x", "acme/app", Workload(issuer, {**claims, "groups": ["other"]})) == set()
    assert rules.actions("x", "acme/app", Workload(issuer, {**claims, "ref_protected": False})) == set()
    assert rules.actions("x", "acme/app", Workload(issuer + "/", claims)) == set()  # issuers compare exactly
    assert rules.actions("x", "acme/app", Workload(issuer, {k: v for k, v in claims.items() if k != "groups"})) == set()
    assert rules.actions("x", "acme/app") == set()  # a user of the same name is someone else


def test_incoherent_oidc_settings_stop_the_service(tmp_path: Path, github: Issuer) -> None:
    access = tmp_path / "access.yaml"
    access.write_text("rules: [{issuer: 'https://elsewhere', claims: {sub: x}, repositories: ['*'], actions: [pull]}]")
    entry = {"issuer": github.url, "audience": AUDIENCE}
    for extra, message in (
        ({"auth_oidc_issuers": [entry]}, "REGISTRY_AUTH_OIDC_ISSUERS needs REGISTRY_AUTH_ACCESS"),
        ({"auth_oidc_issuers": [{**entry, "issuer": "http://ci.example"}], "auth_access": access}, "plain http"),
        ({"auth_oidc_issuers": [{**entry, "audience": ""}], "auth_access": access}, r"ISSUERS\[0\]\.audience"),
        ({"auth_oidc_issuers": [entry, entry], "auth_access": access}, "twice"),
        ({"auth_oidc_issuers": [{**entry, "aud": "x"}], "auth_access": access}, "aud"),
    ):
        with pytest.raises(SettingsError, match=message):
            load_settings(data_dir=tmp_path, **extra)
    settings = load_settings(data_dir=tmp_path, staging_dir=tmp_path, auth_oidc_issuers=[entry], auth_access=access)
    with pytest.raises(SettingsError, match="untrusted issuers"):
        create_app(settings)
