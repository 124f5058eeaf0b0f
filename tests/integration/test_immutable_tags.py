"""Immutable tags (REGISTRY_POLICY): a matching tag is never moved nor deleted, and the bucket is left as it was;
the same manifest pushed again under it is accepted (a CI retry); other tags move as before."""

from __future__ import annotations

import hashlib
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.registry.policy import PolicyError, PolicyFile, load, parse_duration
from app.settings import Settings
from tests.conftest import BACKENDS, BucketView, filesystem_settings, s3_settings
from tests.support.pushing import OCI_INDEX, OCI_MANIFEST, digest, image_manifest, push_image, push_manifest
from tests.support.registry_server import running_registry

NAME = "release/app"
POLICY = """
immutable:
  - repositories: ["release/*"]
    tags: ["v*"]
"""


@pytest.fixture(params=BACKENDS)
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    extra = {"policy": policy, "delete_enabled": True}
    if request.param == "s3":
        return s3_settings(request.getfixturevalue("s3_server"), request.getfixturevalue("bucket"), tmp_path, **extra)
    return filesystem_settings(tmp_path, **extra)


@pytest.fixture
def client(settings: Settings) -> Iterator[httpx.Client]:
    with running_registry(settings) as url, httpx.Client(base_url=url, timeout=60) as http:
        yield http


def refused(response: httpx.Response, tag: str, change: str) -> None:
    assert response.status_code == 403, response.text
    error = response.json()["errors"][0]
    assert error["code"] == "DENIED"
    assert f"{NAME}:{tag} is immutable (immutable rule 1" in error["message"]
    assert f"cannot be {change}" in error["message"]
    assert error["detail"].items() >= {"name": NAME, "tag": tag, "rule": "immutable[1]"}.items()


def test_an_immutable_tag_is_neither_moved_nor_deleted(client: httpx.Client, bucket_view: BucketView) -> None:
    first = push_image(client, NAME, "v1.0", seed=1)
    other = push_image(client, NAME, "dev", seed=2)
    before = bucket_view.objects()

    refused(push_manifest(client, NAME, "v1.0", other.manifest, OCI_MANIFEST), "v1.0", "moved")
    refused(client.put(f"/v2/{NAME}/manifests/{other.digest}?tag=v1.0", content=other.manifest,
                       headers={"Content-Type": OCI_MANIFEST}), "v1.0", "moved")  # fmt: skip
    refused(client.delete(f"/v2/{NAME}/manifests/v1.0"), "v1.0", "deleted")
    refused(client.delete(f"/v2/{NAME}/manifests/{first.digest}"), "v1.0", "deleted")  # would take the tag along
    assert bucket_view.objects() == before

    assert push_manifest(client, NAME, "v1.0", first.manifest, OCI_MANIFEST).status_code == 201  # a retry
    assert client.get(f"/v2/{NAME}/manifests/v1.0").content == first.manifest


def test_other_tags_move_and_new_immutable_tags_are_pushed(client: httpx.Client) -> None:
    first = push_image(client, NAME, "dev", seed=1)
    second = push_image(client, NAME, "dev", seed=2)  # `dev` matches no rule: it moves
    assert client.get(f"/v2/{NAME}/manifests/dev").content == second.manifest
    assert push_manifest(client, NAME, "v2", first.manifest, OCI_MANIFEST).status_code == 201
    assert client.delete(f"/v2/{NAME}/manifests/dev").status_code == 202
    other = push_image(client, "staging/app", "v2", seed=3)  # another repository: no rule
    moved = image_manifest(other.config, other.layers[:1])
    assert push_manifest(client, "staging/app", "v2", moved, OCI_MANIFEST).status_code == 201
    assert client.get(f"/v2/{NAME}/manifests/v2").json()["config"]["digest"] == digest(first.config)


def test_the_file_is_read_again_when_it_changes_and_a_broken_one_keeps_the_rules(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    rules = PolicyFile(path)
    assert rules.current().immutable_rule(NAME, "v1") is not None
    path.write_text('immutable:\n  - repositories: ["release/*"]\n    tags: ["stable"]\n')
    assert rules.current().immutable_rule(NAME, "v1") is None
    path.write_text("immutable: [oops")
    assert rules.current().immutable_rule(NAME, "stable") is not None  # the last good rules stay


def test_reload_reads_a_change_that_kept_mtime_and_size(tmp_path: Path) -> None:
    """What SIGHUP calls: the way to make the service read an edit its size and mtime do not show."""
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    rules = PolicyFile(path)
    stat = path.stat()
    path.write_text(POLICY.replace('"v*"', '"w*"'))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert rules.current().immutable_rule(NAME, "v1") is not None
    previous = signal.signal(signal.SIGHUP, lambda *_: rules.reload())
    try:
        os.kill(os.getpid(), signal.SIGHUP)
    finally:
        signal.signal(signal.SIGHUP, previous)
    assert rules.current().immutable_rule(NAME, "v1") is None


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("immutable: [{repositories: ['a/*']}]", "immutable rule 1: names no tags"),
        ("retention: [{repositories: ['a/*'], keep_tags: [x]}]", "names neither keep_last nor expire_after"),
        ("retention: [{repositories: ['a/*'], keep_last: -1}]", "keep_last: expected a whole number"),
        ("retention: [{repositories: ['a/*'], expire_after: soon}]", "expire_after: 'soon' is not a duration"),
        ("untagged: 1d", "expected a mapping"),
    ],
)
def test_a_malformed_file_says_where(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    with pytest.raises(PolicyError, match=problem):
        load(path)


def test_durations() -> None:
    assert [parse_duration(t) for t in ("90", "90s", "30m", "1h", "7d", "2w")] == [90, 90, 1800, 3600, 604800, 1209600]


def test_the_same_bytes_pushed_by_another_digest_do_not_rename_an_immutable_tag(client: httpx.Client) -> None:
    """Pushing v1.0's very bytes again named by their sha512 would make the tag resolve to another digest."""
    first = push_image(client, NAME, "v1.0", seed=1)
    sha512 = "sha512:" + hashlib.sha512(first.manifest).hexdigest()
    again = client.put(
        f"/v2/{NAME}/manifests/v1.0", params={"digest": sha512}, content=first.manifest,
        headers={"Content-Type": OCI_MANIFEST},
    )  # fmt: skip
    refused(again, "v1.0", "moved")
    assert client.head(f"/v2/{NAME}/manifests/v1.0").headers["Docker-Content-Digest"] == first.digest
    assert client.head(f"/v2/{NAME}/manifests/{sha512}").status_code == 404  # refused before anything was written


def test_what_an_immutable_tag_reaches_cannot_be_deleted(client: httpx.Client) -> None:
    """A tag that stays but cannot be pulled is no better than a moved one: its index's children and its blobs
    are refused too (DENIED), while content no immutable tag reaches still goes."""
    child = push_image(client, NAME, "dev-child", seed=1)
    index = json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_INDEX,
         "manifests": [{"mediaType": OCI_MANIFEST, "digest": child.digest, "size": len(child.manifest)}]}
    ).encode()  # fmt: skip
    assert push_manifest(client, NAME, "v3", index, OCI_INDEX).status_code == 201
    assert client.delete(f"/v2/{NAME}/manifests/dev-child").status_code == 202  # only a tag: the child stays
    for path in (f"/v2/{NAME}/manifests/{child.digest}", f"/v2/{NAME}/blobs/{digest(child.layers[0])}"):
        answer = client.delete(path)
        assert answer.status_code == 403 and answer.json()["errors"][0]["code"] == "DENIED", path
        assert f"{NAME}:v3 is immutable" in answer.json()["errors"][0]["message"]
    loose = push_image(client, NAME, "scratch", seed=9)
    assert client.delete(f"/v2/{NAME}/blobs/{digest(loose.layers[0])}").status_code == 202


@pytest.mark.parametrize("emptied", ["", "immutable:\n", "immutable: []\n", "retention: []\n"])
def test_a_file_emptied_while_the_service_runs_keeps_the_immutable_rules(
    tmp_path: Path, emptied: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An editor rewriting the file, or a section left empty, must not unlock tags for even a moment."""
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    rules = PolicyFile(path)
    path.write_text(emptied)
    rules.reload()
    assert rules.current().immutable_rule(NAME, "v1") is not None
    assert "immutable rule(s) in force stay" in caplog.text


def test_an_immutable_section_that_is_not_a_list_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("immutable: {}\n")
    with pytest.raises(PolicyError, match="`immutable` must be a list of rules"):
        load(path)
