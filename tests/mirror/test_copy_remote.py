"""`storj-registry copy docker://…` from real registries: anonymous, htpasswd (Basic), and the token flow."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from app.settings import Settings
from app.storage import open_storage
from tests.mirror.conftest import Filled, Run, pull_all, pulled_digest
from tests.mirror.upstream import PASSWORD, USER
from tests.support.fault_proxy import FaultProxy, drop, slow_down, unavailable

CREDS = f"{USER}:{PASSWORD}"


def referrers_in_bucket(settings: Settings, name: str, subject: str) -> list[str]:
    found = open_storage(settings).read_small(f"v2/{name}/referrers/{subject}")
    return [entry["digest"] for entry in json.loads(found[0])["manifests"]] if found else []


def test_image_with_its_referrers_from_an_anonymous_registry(
    settings: Settings, cli: Callable[..., Run], pull: str, anonymous: Filled, tmp_path: Path
) -> None:
    content = anonymous.content
    run = cli(settings, "copy", f"docker://{anonymous.host}/team/app:v1", "mirror/app")
    assert run.status == 0, run.out + run.err
    assert pulled_digest(pull, "mirror/app:v1") == content.image.manifest_digest
    pull_all(pull, "mirror/app:v1", tmp_path / "back")
    # The SBOM came along (from the tag schema: distribution 2.8 has no referrers API), bytes intact.
    assert referrers_in_bucket(settings, "mirror/app", content.image.manifest_digest) == [content.sbom_digest]
    assert pulled_digest(pull, f"mirror/app@{content.sbom_digest}") == content.sbom_digest


def test_every_platform_by_default_or_the_one_asked_for(
    settings: Settings, cli: Callable[..., Run], pull: str, anonymous: Filled, tmp_path: Path
) -> None:
    index = anonymous.content.index
    assert cli(settings, "copy", f"docker://{anonymous.host}/team/multi:v1", "mirror/multi").status == 0
    assert pulled_digest(pull, "mirror/multi:v1") == index.digest
    pull_all(pull, "mirror/multi:v1", tmp_path / "all")

    arm = next(child for child in index.children if child.platform == ("linux", "arm64"))
    run = cli(settings, "copy", "--platform", "linux/arm64", f"docker://{anonymous.host}/team/multi:v1", "mirror/arm:1")
    assert run.status == 0, run.out
    assert pulled_digest(pull, "mirror/arm:1") == arm.manifest_digest
    wrong = cli(settings, "copy", "--platform", "windows/amd64", f"docker://{anonymous.host}/team/multi:v1", "x/y:1")
    assert wrong.status == 1
    assert "linux/amd64, linux/arm64" in wrong.out


def test_by_digest_and_without_referrers(settings: Settings, cli: Callable[..., Run], anonymous: Filled) -> None:
    image = anonymous.content.image
    source = f"docker://{anonymous.host}/team/app@{image.manifest_digest}"
    run = cli(settings, "copy", "--no-referrers", "--json", source, "mirror/pinned:stable")
    assert run.status == 0, run.out
    assert run.json()["jobs"][0]["digest"] == image.manifest_digest
    assert referrers_in_bucket(settings, "mirror/pinned", image.manifest_digest) == []


@pytest.mark.parametrize("settings", ["filesystem"], indirect=True)
def test_basic_auth_from_the_flag_or_the_docker_config(
    settings: Settings, cli: Callable[..., Run], basic: Filled, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = f"docker://{basic.host}/team/app:v1"
    refused = cli(settings, "copy", source, "mirror/app")
    assert refused.status == 1
    assert "needs credentials" in refused.out
    assert cli(settings, "copy", "--src-creds", f"{USER}:wrong", source, "mirror/app").status == 1

    assert cli(settings, "copy", "--src-creds", CREDS, source, "mirror/app").status == 0
    config = tmp_path / "docker"
    config.mkdir()
    auth = base64.b64encode(CREDS.encode()).decode()
    (config / "config.json").write_text(json.dumps({"auths": {basic.host: {"auth": auth}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    run = cli(settings, "copy", f"docker://{basic.host}/team/multi:v1", "mirror/multi")
    assert run.status == 0, run.out
    assert f"{basic.content.index.digest}" in run.out


@pytest.mark.parametrize("settings", ["s3"], indirect=True)
def test_token_flow_and_the_referrers_api(
    settings: Settings, cli: Callable[..., Run], pull: str, token: Filled
) -> None:
    content = token.content
    run = cli(settings, "copy", "--src-creds", CREDS, f"docker://{token.host}/team/app:v1", "mirror/app")
    assert run.status == 0, run.out + run.err
    assert pulled_digest(pull, "mirror/app:v1") == content.image.manifest_digest
    assert referrers_in_bucket(settings, "mirror/app", content.image.manifest_digest) == [content.sbom_digest]


@pytest.mark.parametrize("settings", ["filesystem"], indirect=True)
def test_upstream_throttling_and_errors_are_retried(
    settings: Settings, cli: Callable[..., Run], anonymous: Filled
) -> None:
    """429 and 503 (with `Retry-After: 1`) and a dropped connection: each request is tried again, the copy ends."""
    fallback_tag = "/manifests/" + anonymous.content.image.manifest_digest.replace(":", "-")
    with FaultProxy(f"http://{anonymous.host}") as proxy:
        proxy.add(slow_down(path="/manifests/v1$", times=1))
        proxy.add(unavailable(path="/blobs/", times=2))
        proxy.add(drop(path=fallback_tag, times=1))
        run = cli(settings, "copy", "--json", f"docker://127.0.0.1:{proxy.port}/team/app:v1", "mirror/app")
        assert run.status == 0, run.out + run.err
        assert proxy.count("GET", "/manifests/v1$") == 2
        assert proxy.count("GET", fallback_tag) == 2
        assert sum(fault.hits for fault in proxy.faults) == 4
    assert run.json()["jobs"][0]["digest"] == anonymous.content.image.manifest_digest


@pytest.mark.parametrize("settings", ["filesystem"], indirect=True)
def test_a_blob_known_in_another_repository_is_copied_in_the_bucket(
    settings: Settings, cli: Callable[..., Run], anonymous: Filled
) -> None:
    settings = settings.model_copy(update={"share_min_bytes": 0})  # small blobs get location records too
    source = f"docker://{anonymous.host}/team/app:v1"
    assert cli(settings, "copy", "--no-referrers", source, "first/app").status == 0
    run = cli(settings, "copy", "--no-referrers", "--json", source, "second/app")
    total = run.json()["total"]
    assert (total["blobs_uploaded"], total["blobs_mounted"], total["manifests_written"]) == (0, 3, 1)
