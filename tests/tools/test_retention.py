"""Retention rules applied by `storj-registry gc`: the newest tags and the named ones stay with everything they
reach (an index's children, referrers), the rest goes in order (tags, then manifests, then blobs), and the
bucket's documents stay consistent (fsck clean)."""

from __future__ import annotations

import io
import json
import time

import httpx

from app import layout
from app.registry.policy import parse
from app.settings import Settings
from app.storage import Storage
from app.tools.fsck import fsck
from app.tools.gc import Collector, gc
from app.tools.inventory import Progress, take_inventory
from tests.support.pushing import (
    OCI_INDEX,
    OCI_MANIFEST,
    PushedImage,
    descriptor,
    digest,
    image_manifest,
    push_blob,
    push_image,
    push_manifest,
)
from tests.tools.conftest import QUICK, referrer, run_tool

CI, PREVIEW = "ci/app", "preview/app"
POLICY = parse(
    {
        "retention": [
            {"repositories": ["ci/*"], "keep_last": 3, "keep_tags": ["latest"]},
            {"repositories": ["preview/*"], "expire_after": "2s"},
        ],
    }
)


def tick(settings: Settings) -> None:
    """Push times are Last-Modified: whole seconds on S3."""
    time.sleep(1.05 if settings.storage == "s3" else 0.01)


def put(client: httpx.Client, name: str, reference: str, body: bytes, media_type: str = OCI_MANIFEST) -> None:
    assert push_manifest(client, name, reference, body, media_type).status_code == 201


def push_child(client: httpx.Client, seed: int) -> PushedImage:
    """An image pushed by digest only, as a client pushes an index's children."""
    config = json.dumps({"architecture": "arm64", "os": "linux", "seed": seed}).encode()
    layers = [f"child-layer-{seed}".encode() * 100]
    for blob in (config, *layers):
        push_blob(client, CI, blob)
    manifest = image_manifest(config, layers)
    put(client, CI, digest(manifest), manifest)
    return PushedImage(manifest, digest(manifest), config, layers)


def test_keep_last_keeps_the_newest_tags_and_latest_with_all_they_reach(
    client: httpx.Client, storage: Storage, settings: Settings
) -> None:
    """build-1..5 pushed in turn, build-4 a multi-arch index; `latest` names build-1's image."""
    images = {}
    for number in (1, 2, 3, 5):
        images[number] = push_image(client, CI, f"build-{number}", seed=number)
        tick(settings)
        if number == 3:
            child = push_child(client, seed=4)
            index = {
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": [descriptor(OCI_MANIFEST, child.manifest)],
            }
            put(client, CI, "build-4", json.dumps(index).encode(), OCI_INDEX)
            tick(settings)
    put(client, CI, "latest", images[1].manifest)
    push_blob(client, CI, b"{}")
    signature = referrer(images[2].manifest, "signed build-2")  # build-2 is pushed out: its signature goes
    kept_signature = referrer(images[5].manifest, "signed build-5")
    for body in (signature, kept_signature):
        put(client, CI, digest(body), body)

    _, lines = run_tool(gc, storage, grace_seconds=0, policy=POLICY)
    removed = [line.split(" ")[1] for line in lines if line.startswith("would-delete ")]
    gone_tags = {layout.manifest(CI, "build-1"), layout.manifest(CI, "build-2")}
    assert {key for key in removed if "/manifests/build" in key} == gone_tags
    assert (
        f"would-delete {layout.manifest(CI, 'build-1')} (push 5 by age, past keep_last 3 (retention rule 1))" in lines
    )
    assert f"keep {layout.manifest(CI, 'latest')} (keep_tags of retention rule 1)" in lines

    run_tool(gc, storage, grace_seconds=0, delete=True, policy=POLICY, timing=QUICK)
    assert client.get(f"/v2/{CI}/tags/list").json()["tags"] == ["build-3", "build-4", "build-5", "latest"]
    assert client.get(f"/v2/{CI}/manifests/{images[2].digest}").status_code == 404
    # gone from the bucket (the running service may answer a HEAD from what it saw for up to 30 s more)
    assert storage.stat(layout.blob(CI, digest(images[2].config))) is None
    assert client.get(f"/v2/{CI}/manifests/{digest(signature)}").status_code == 404
    for kept in (images[1], child, images[3], images[5]):
        assert client.get(f"/v2/{CI}/manifests/{kept.digest}").content == kept.manifest
        for blob in (kept.config, *kept.layers):
            assert client.get(f"/v2/{CI}/blobs/{digest(blob)}").content == blob
    referrers = client.get(f"/v2/{CI}/referrers/{images[5].digest}").json()["manifests"]
    assert [item["digest"] for item in referrers] == [digest(kept_signature)]
    assert run_tool(fsck, storage)[1] == []
    assert run_tool(gc, storage, grace_seconds=0, delete=True, policy=POLICY, timing=QUICK)[0].deleted == 0  # settled


def test_expire_after_lets_old_tags_and_their_content_go(client: httpx.Client, storage: Storage) -> None:
    old = push_image(client, PREVIEW, "pr-1", seed=1)
    time.sleep(2.1)
    new = push_image(client, PREVIEW, "pr-2", seed=2)
    _, lines = run_tool(gc, storage, grace_seconds=0, delete=True, policy=POLICY, timing=QUICK)
    assert any(line.startswith(f"deleted {layout.manifest(PREVIEW, 'pr-1')} (pushed ") for line in lines)
    assert client.get(f"/v2/{PREVIEW}/tags/list").json()["tags"] == ["pr-2"]
    assert client.get(f"/v2/{PREVIEW}/manifests/{old.digest}").status_code == 404
    assert client.get(f"/v2/{PREVIEW}/manifests/pr-2").content == new.manifest
    assert run_tool(fsck, storage)[1] == []


def test_untagged_manifests_wait_for_untagged_after(client: httpx.Client, storage: Storage) -> None:
    first = push_image(client, "plain/app", "v1", seed=1)
    push_image(client, "plain/app", "v1", seed=2)  # `first` is untagged now, but only just
    policy = parse({"untagged_after": "1h"})
    _, lines = run_tool(gc, storage, grace_seconds=0, policy=policy)
    assert f"kept-recent {layout.manifest('plain/app', first.digest)}" in " ".join(lines)
    assert not any(line.startswith("would-delete") and "manifests" in line for line in lines)


def test_a_tag_pushed_again_after_gc_planned_stays(client: httpx.Client, storage: Storage, settings: Settings) -> None:
    """Retention judged the push it saw: a push since (new content and a 201, or the same again) is not its."""
    expiring = parse({"retention": [{"repositories": ["ci/*"], "keep_last": 0}]})
    push_image(client, CI, "tmp-1", seed=1)
    push_image(client, CI, "tmp-2", seed=2)
    collector = Collector(storage, 0, True, io.StringIO(), Progress("gc"), expiring)
    [plan] = collector.plan(take_inventory(storage, Progress("gc")))
    assert set(plan.tags) == {"tmp-1", "tmp-2"}
    tick(settings)
    again = push_image(client, CI, "tmp-1", seed=3)  # new content, after the plan
    collector.execute(plan, claimed=set())
    assert client.get(f"/v2/{CI}/manifests/tmp-1").content == again.manifest
    assert client.get(f"/v2/{CI}/manifests/tmp-2").status_code == 404
    assert client.get(f"/v2/{CI}/tags/list").json()["tags"] == ["tmp-1"]
