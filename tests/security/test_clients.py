"""Genuine clients against an authenticated registry: docker, skopeo and the oras SDK.

Two registries on the S3 backend serve the module: `basic` (htpasswd over plain HTTP, challenges `Basic`) and
`token` (the docker token flow over HTTPS with a certificate from a test CA). For each client: the right
user pushes, a wrong password is refused (401), a user without push is denied (403), anonymous pushes are
refused (401). skopeo and oras verify the certificate against the CA; docker treats loopback registries as
insecure (it skips verification), but the service speaks only HTTPS, so docker's push went over TLS.
"""

from __future__ import annotations

import contextlib
import re
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import httpx
import oras.client
import oras.decorator
import pytest

from tests.conftest import s3_settings
from tests.security.conftest import PASSWORDS
from tests.security.pki import Pki
from tests.security.tokenflow import TokenAuth
from tests.support.daemons import CommandFailed, Daemon, start_containerd
from tests.support.images import make_layer, oci_ref, write_image
from tests.support.registry_server import running_registry
from tests.support.seaweed import S3Server
from tests.support.tools import require_tool

pytestmark = pytest.mark.e2e

REFUSED = r"(?i:unauthorized|authentication required|401)"
DENIED = r"(?i:denied|403|forbidden)"


@dataclass(frozen=True)
class Registry:
    url: str
    token: bool

    @property
    def host(self) -> str:
        return self.url.split("://", 1)[1]


@pytest.fixture(scope="module")
def registries(
    s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory, auth_files: dict[str, Path], pki: Pki
) -> Iterator[dict[str, Registry]]:
    bucket = s3_server.new_bucket("clients")
    auth = {
        "auth_htpasswd": auth_files["htpasswd"],
        "auth_access": auth_files["access"],
        "auth_max_failures": 0,  # the wrong passwords below (and the clients' own retries) must not block 127.0.0.1
        "s3_prefix": "reg",
    }
    basic = s3_settings(s3_server, bucket, tmp_path_factory.mktemp("basic"), **auth)
    token = s3_settings(
        s3_server,
        bucket,
        tmp_path_factory.mktemp("token"),
        auth_token_enabled=True,
        tls_cert=pki.server_cert,
        tls_key=pki.server_key,
        **auth,
    )
    with running_registry(basic) as basic_url, running_registry(token) as token_url:
        yield {"basic": Registry(basic_url, False), "token": Registry(token_url, True)}


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("layout")
    write_image(directory, "v1", [make_layer(41, 4096)])
    return directory


def pull_status(registry: Registry, pki: Pki, name: str, tag: str) -> int:
    """What an authorized reader (alice) finds under the tag: 200 once pushed, 404 otherwise."""
    alice = ("alice", PASSWORDS["alice"])
    auth = TokenAuth(*alice) if registry.token else httpx.BasicAuth(*alice)
    verify = ssl.create_default_context(cafile=pki.ca_cert) if registry.token else True
    with httpx.Client(base_url=registry.url, auth=auth, verify=verify) as client:
        return client.head(f"/v2/{name}/manifests/{tag}").status_code


# docker ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def docker_image(dockerd: Daemon, layout: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    archive = tmp_path_factory.mktemp("archive") / "image.tar"
    done = skopeo("copy", oci_ref(layout, "v1"), f"docker-archive:{archive}:local/auth-test:v1")
    assert done.returncode == 0, done.stderr
    dockerd.run("load", "--input", str(archive))
    return "local/auth-test:v1"


def docker_refusal(dockerd: Daemon, *args: str) -> str:
    """What docker printed on stderr when it refused to do `args` (the command must fail)."""
    with pytest.raises(CommandFailed) as failed:
        dockerd.run(*args)
    message = str(failed.value)
    return message.split("stderr: ", 1)[1].split(f"\n{dockerd.name} log tail:", 1)[0]


@pytest.mark.parametrize("mode", ["basic", "token"])
def test_docker(mode: str, registries: dict[str, Registry], dockerd: Daemon, docker_image: str, pki: Pki) -> None:
    registry = registries[mode]
    reference = f"{registry.host}/team/docker-{mode}:v1"
    dockerd.run("tag", docker_image, reference)
    anonymous = docker_refusal(dockerd, "push", reference)
    assert re.search(f"{REFUSED}|no basic auth credentials", anonymous), anonymous
    wrong = docker_refusal(dockerd, "login", registry.host, "--username", "bob", "--password", "wrong")
    assert re.search(REFUSED, wrong), wrong
    dockerd.run("login", registry.host, "--username", "carol", "--password", PASSWORDS["carol"])
    denied = docker_refusal(dockerd, "push", reference)
    assert re.search(DENIED, denied), denied
    assert "Login Succeeded" in dockerd.run("login", registry.host, "--username", "bob", "--password", PASSWORDS["bob"])
    dockerd.run("push", reference)
    dockerd.run("logout", registry.host)
    assert pull_status(registry, pki, f"team/docker-{mode}", "v1") == 200


# skopeo ----------------------------------------------------------------------------------------------


def skopeo(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [require_tool("skopeo"), "--insecure-policy", *args],
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    return done


@pytest.mark.parametrize("mode", ["basic", "token"])
def test_skopeo(mode: str, registries: dict[str, Registry], layout: Path, pki: Pki, tmp_path: Path) -> None:
    registry = registries[mode]
    if registry.token:
        (tmp_path / "certs").mkdir()
        (tmp_path / "certs" / "ca.crt").write_bytes(pki.ca_cert.read_bytes())
        tls = ["--dest-cert-dir", str(tmp_path / "certs"), "--dest-tls-verify=true"]
    else:
        tls = ["--dest-tls-verify=false"]
    authfile = tmp_path / "auth.json"
    authfile.write_text("{}")  # never the machine's own credentials
    destination = f"docker://{registry.host}/team/skopeo-{mode}:v1"

    def push(*credentials: str) -> subprocess.CompletedProcess[str]:
        return skopeo("copy", *tls, "--dest-authfile", str(authfile), *credentials, oci_ref(layout, "v1"), destination)

    for credentials, expected in (
        (["--dest-no-creds"], REFUSED),
        (["--dest-creds", "bob:wrong"], REFUSED),
        (["--dest-creds", f"carol:{PASSWORDS['carol']}"], DENIED),
    ):
        refused = push(*credentials)
        assert refused.returncode != 0 and refused.stderr, credentials
        assert re.search(expected, refused.stderr), refused.stderr
    done = push("--dest-creds", f"bob:{PASSWORDS['bob']}")
    assert done.returncode == 0, done.stderr
    assert pull_status(registry, pki, f"team/skopeo-{mode}", "v1") == 200


# oras ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["basic", "token"])
def test_oras(
    mode: str, registries: dict[str, Registry], pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = registries[mode]
    # oras retries refused requests with sleeps of up to 81 s; what goes over the wire stays the same
    monkeypatch.setattr(oras.decorator, "time", SimpleNamespace(sleep=lambda seconds: None))
    monkeypatch.chdir(tmp_path)  # oras pushes files relative to the working directory
    Path("artifact.txt").write_text("an artifact")
    name = f"team/oras-{mode}"

    def push(user: str | None, password: str | None) -> list[int]:
        """Push as `user`; every status the registry answered (the SDK raises or logs on refusals)."""
        client = oras.client.OrasClient(
            hostname=registry.host,
            insecure=not registry.token,
            tls_verify=str(pki.ca_cert) if registry.token else False,
            auth_backend="token" if registry.token else "basic",
        )
        statuses: list[int] = []
        client.session.hooks["response"].append(lambda response, **_: statuses.append(response.status_code))
        if user:
            client.auth.set_basic_auth(user, password)
        with contextlib.suppress(ValueError):  # how the SDK reports a refused upload or manifest
            client.push(files=["artifact.txt"], target=f"{registry.host}/{name}:v1")
        return statuses

    if registry.token:  # the SDK's anonymous flow (an anonymous token); its basic backend needs credentials
        assert refused_with(push(None, None), 401)
    assert refused_with(push("bob", "wrong"), 401)
    assert refused_with(push("carol", PASSWORDS["carol"]), 403)
    assert pull_status(registry, pki, name, "v1") == 404
    assert push("bob", PASSWORDS["bob"])[-1] == 201
    assert pull_status(registry, pki, name, "v1") == 200


def refused_with(statuses: list[int], status: int) -> bool:
    """The registry said `status` and never accepted a write (201/202)."""
    return status in statuses and not {201, 202} & set(statuses)


# containerd ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def containerd() -> Iterator[Daemon]:
    daemon = start_containerd()
    yield daemon
    daemon.stop()


def test_ctr_with_the_token_flow_over_https(
    registries: dict[str, Registry], containerd: Daemon, layout: Path, pki: Pki, tmp_path: Path
) -> None:
    """containerd tries the OAuth2 password grant (POST) at the token endpoint, and verifies the CA."""
    registry = registries["token"]
    archive = tmp_path / "image.tar"
    assert skopeo("copy", oci_ref(layout, "v1"), f"oci-archive:{archive}:v1").returncode == 0
    base = f"{registry.host}/team/ctr"
    containerd.run("images", "import", "--base-name", base, str(archive))
    # ctr speaks plain HTTP to loopback unless a hosts.toml says otherwise; this one names HTTPS and the CA
    hosts = tmp_path / "hosts" / registry.host
    hosts.mkdir(parents=True)
    (hosts / "hosts.toml").write_text(
        f'server = "{registry.url}"\n[host."{registry.url}"]\n  ca = "{pki.ca_cert}"\n'
        '  capabilities = ["pull", "resolve", "push"]\n'
    )
    push = ("images", "push", "--hosts-dir", str(tmp_path / "hosts"), f"{base}:v1")
    for user in ("bob:wrong", f"carol:{PASSWORDS['carol']}"):
        with pytest.raises(CommandFailed) as refused:
            containerd.run(*push[:2], "--user", user, *push[2:])
        assert re.search(f"{REFUSED}|{DENIED}", str(refused.value).split("log tail:", 1)[0]), refused.value
    assert pull_status(registry, pki, "team/ctr", "v1") == 404
    containerd.run(*push[:2], "--user", f"bob:{PASSWORDS['bob']}", *push[2:])
    assert pull_status(registry, pki, "team/ctr", "v1") == 200
