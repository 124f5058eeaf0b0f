"""Genuine clients log in with a CI job's ID token: docker, skopeo and the oras SDK, as user `oidc`.

A local issuer (tests/support/oidc_issuer.py) signs GitHub-shaped tokens; the registry trusts it, and its claim
rules let `acme`'s repositories push `acme/*`. Each client pushes with an allowed token, is denied (403) with a
valid token the rules do not name, and refused (401) with an expired one. docker and oras speak Basic auth;
skopeo goes through the docker token flow (`/auth/token` with the ID token, then a registry token).
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import oras.client
import oras.decorator
import pytest

from app.settings import Settings
from tests.conftest import filesystem_settings
from tests.security.test_clients import DENIED, REFUSED, docker_refusal, refused_with, skopeo
from tests.support.daemons import Daemon
from tests.support.images import make_layer, oci_ref, write_image
from tests.support.oidc_issuer import Issuer, running_issuer
from tests.support.registry_server import running_registry

pytestmark = pytest.mark.e2e

AUDIENCE = "registry.test"


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    with running_issuer("RS256") as running:
        yield running


def settings_for(issuer: Issuer, directory: Path, **extra: object) -> Settings:
    access = directory / "access.yaml"
    access.write_text(
        f"rules: [{{issuer: '{issuer.url}', claims: {{repository_owner: acme}}, "
        "repositories: ['acme/*'], actions: [push]}]"
    )
    issuers = [{"issuer": issuer.url, "audience": AUDIENCE}]
    return filesystem_settings(directory, auth_access=access, auth_oidc_issuers=issuers, auth_max_failures=0, **extra)


@pytest.fixture(scope="module")
def basic_url(issuer: Issuer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_registry(settings_for(issuer, tmp_path_factory.mktemp("basic"))) as url:
        yield url


@pytest.fixture(scope="module")
def token_url(issuer: Issuer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = settings_for(issuer, tmp_path_factory.mktemp("token"), auth_token_enabled=True)
    with running_registry(settings) as url:
        yield url


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("layout")
    write_image(directory, "v1", [make_layer(43, 4096)])
    return directory


def tokens(issuer: Issuer) -> dict[str, str]:
    """An allowed job's token, a valid token of another owner, and an expired token of the allowed job."""
    now = int(time.time())
    expired = issuer.claims(AUDIENCE, sub="repo:acme/app:ref:refs/heads/main", repository_owner="acme")
    return {
        "allowed": issuer.github(AUDIENCE),
        "other owner": issuer.github(AUDIENCE, owner="mallory"),
        "expired": issuer.sign({**expired, "iat": now - 900, "nbf": now - 900, "exp": now - 300}),
    }


def tag_status(url: str, issuer: Issuer, name: str) -> int:
    with httpx.Client(base_url=url, auth=("oidc", issuer.github(AUDIENCE))) as client:
        return client.head(f"/v2/{name}/manifests/v1").status_code


def test_docker_logs_in_with_an_id_token(
    dockerd: Daemon, issuer: Issuer, basic_url: str, layout: Path, tmp_path: Path
) -> None:
    host = basic_url.split("://", 1)[1]
    archive = tmp_path / "image.tar"
    assert skopeo("copy", oci_ref(layout, "v1"), f"docker-archive:{archive}:local/oidc:v1").returncode == 0
    dockerd.run("load", "--input", str(archive))
    reference = f"{host}/acme/docker:v1"
    dockerd.run("tag", "local/oidc:v1", reference)
    jobs = tokens(issuer)
    refused = docker_refusal(dockerd, "login", host, "--username", "oidc", "--password", jobs["expired"])
    assert re.search(REFUSED, refused), refused
    dockerd.run("login", host, "--username", "oidc", "--password", jobs["other owner"])
    denied = docker_refusal(dockerd, "push", reference)
    assert re.search(DENIED, denied), denied
    assert "Login Succeeded" in dockerd.run("login", host, "--username", "oidc", "--password", jobs["allowed"])
    dockerd.run("push", reference)
    dockerd.run("logout", host)
    assert tag_status(basic_url, issuer, "acme/docker") == 200


def test_skopeo_goes_through_the_token_flow_with_an_id_token(
    issuer: Issuer, token_url: str, layout: Path, tmp_path: Path
) -> None:
    authfile = tmp_path / "auth.json"
    authfile.write_text("{}")
    destination = f"docker://{token_url.split('://', 1)[1]}/acme/skopeo:v1"
    jobs = tokens(issuer)

    def push(token: str) -> str | None:
        done = skopeo(
            "copy",
            "--dest-tls-verify=false",
            "--dest-authfile",
            str(authfile),
            "--dest-creds",
            f"oidc:{token}",
            oci_ref(layout, "v1"),
            destination,
        )
        return done.stderr if done.returncode else None

    assert re.search(REFUSED, push(jobs["expired"]) or ""), "an expired token must be refused"
    assert re.search(DENIED, push(jobs["other owner"]) or ""), "a token the rules do not name must be denied"
    assert push(jobs["allowed"]) is None
    assert tag_status(token_url, issuer, "acme/skopeo") == 200


def test_oras_logs_in_with_an_id_token(
    issuer: Issuer, basic_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(oras.decorator, "time", SimpleNamespace(sleep=lambda seconds: None))
    monkeypatch.chdir(tmp_path)
    Path("artifact.txt").write_text("an artifact")
    host = basic_url.split("://", 1)[1]
    jobs = tokens(issuer)

    def push(token: str) -> list[int]:
        client = oras.client.OrasClient(hostname=host, insecure=True, tls_verify=False, auth_backend="basic")
        statuses: list[int] = []
        client.session.hooks["response"].append(lambda response, **_: statuses.append(response.status_code))
        client.auth.set_basic_auth("oidc", token)
        with contextlib.suppress(ValueError):
            client.push(files=["artifact.txt"], target=f"{host}/acme/oras:v1")
        return statuses

    assert refused_with(push(jobs["expired"]), 401)
    assert refused_with(push(jobs["other owner"]), 403)
    assert tag_status(basic_url, issuer, "acme/oras") == 404
    assert push(jobs["allowed"])[-1] == 201
    assert tag_status(basic_url, issuer, "acme/oras") == 200
