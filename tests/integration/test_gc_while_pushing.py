"""gc is safe while pushes run (README "gc while pushes run"): `gc --delete`, with its waits shortened, runs in
a loop while pushes go through two replicas behind a round-robin proxy. The pushes draw their layers from a
small pool, so they keep reusing blobs of images that the retention rule is expiring: every push succeeds, every
tag that is still there pulls back intact (from the linksharing stand-in on S3), and fsck finds nothing wrong."""

from __future__ import annotations

import hashlib
import io
import json
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from app import layout
from app.registry.policy import parse
from app.settings import Settings
from app.storage import open_storage
from app.tools.fsck import fsck
from app.tools.gc import gc
from app.tools.gc_run import RunTiming
from tests.conftest import BACKENDS, filesystem_settings, s3_settings
from tests.support.pushing import OCI_MANIFEST, digest, image_manifest
from tests.support.registry_server import running_registry
from tests.support.round_robin import RoundRobinProxy
from tests.support.static_server import StaticBucketServer

NAME = "ci/app"
PUSHES = 20
POOL = [f"shared layer {n}".encode() * 200 for n in range(4)]
# Kept tags (`v-*`) live on; every `tmp-*` tag expires at the next run, and with it what only it kept.
POLICY = parse({"retention": [{"repositories": ["ci/*"], "keep_last": 0, "keep_tags": ["v-*"]}]})
WATCH_SECONDS = 0.1
TIMING = RunTiming(settle_seconds=0.3, mark_seconds=1.0)  # > the watch interval, and > a push here
LAYER_SECONDS = 0.3


@pytest.fixture(params=BACKENDS)
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    extra = {"gc_watch_seconds": WATCH_SECONDS}
    if request.param == "s3":
        return s3_settings(request.getfixturevalue("s3_server"), request.getfixturevalue("bucket"), tmp_path, **extra)
    return filesystem_settings(tmp_path, **extra)


@pytest.fixture
def proxy(settings: Settings) -> Iterator[RoundRobinProxy]:
    """Two replicas over one bucket and one staging directory, as the chart runs them."""
    with ExitStack() as stack:
        urls = [stack.enter_context(running_registry(settings)) for _ in range(2)]
        yield stack.enter_context(RoundRobinProxy(urls))


def push_like_a_client(client: httpx.Client, tag: str, number: int) -> tuple[bytes, list[bytes]]:
    """HEAD each blob and upload only those the registry lacks, then PUT the manifest (docker's order)."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "push": number}).encode()
    layers = [f"own layer {number}".encode()]
    if tag.startswith("tmp-"):  # layers of expiring images only: each run expires them, the next push reuses them
        layers += [POOL[(number // 2) % len(POOL)], POOL[(number // 2 + 1) % len(POOL)]]
    for blob in (config, *layers):
        if client.head(f"/v2/{NAME}/blobs/{digest(blob)}").status_code == 200:
            continue
        answer = client.post(f"/v2/{NAME}/blobs/uploads/", params={"digest": digest(blob)}, content=blob)
        assert answer.status_code == 201, answer.text
    time.sleep(LAYER_SECONDS)  # a big layer still uploading: a run may mark and delete what was found meanwhile
    manifest = image_manifest(config, layers)
    answer = client.put(f"/v2/{NAME}/manifests/{tag}", content=manifest, headers={"Content-Type": OCI_MANIFEST})
    assert answer.status_code == 201, f"{tag}: {answer.text}"
    return manifest, [config, *layers]


def gc_in_a_loop(settings: Settings, stop: threading.Event, runs: list[str], errors: list[BaseException]) -> None:
    storage = open_storage(settings)
    try:
        while not stop.is_set():
            out = io.StringIO()
            gc(storage, delete=True, grace_seconds=0, policy=POLICY, timing=TIMING, out=out, progress=None)
            runs.append(out.getvalue())
    except BaseException as exc:  # reported by the test
        errors.append(exc)


def pulled(base_url: str, tag: str) -> tuple[bytes, list[bytes]] | None:
    """The tag's manifest and blobs as a client pulls them; None when the tag is gone (expired by gc)."""
    with httpx.Client(base_url=base_url, timeout=30) as http:
        answer = http.get(f"/v2/{NAME}/manifests/{tag}")
        if answer.status_code == 404:
            return None
        assert answer.status_code == 200, answer.text
        manifest = json.loads(answer.content)
        blobs = []
        for descriptor in (manifest["config"], *manifest["layers"]):
            blob = http.get(f"/v2/{NAME}/blobs/{descriptor['digest']}")
            assert blob.status_code == 200, f"{tag}: {descriptor['digest']} {blob.status_code}"
            assert "sha256:" + hashlib.sha256(blob.content).hexdigest() == descriptor["digest"]
            blobs.append(blob.content)
        return answer.content, blobs


def test_gc_in_a_loop_never_deletes_what_a_push_relies_on(
    settings: Settings, proxy: RoundRobinProxy, request: pytest.FixtureRequest
) -> None:
    stop, runs, errors = threading.Event(), [], []
    collector = threading.Thread(target=gc_in_a_loop, args=(settings, stop, runs, errors), daemon=True)
    pushed: dict[str, tuple[bytes, list[bytes]]] = {}
    with httpx.Client(base_url=proxy.url, timeout=60) as client:
        push_like_a_client(client, "tmp-seed", 0)  # blobs for the first run to expire
        collector.start()
        for number in range(1, PUSHES + 1):
            tag = f"v-{number}" if number % 2 else f"tmp-{number}"
            pushed[tag] = push_like_a_client(client, tag, number)
    stop.set()
    collector.join(timeout=60)
    assert not errors, errors
    assert len(runs) >= 3, "the pushes should span several gc runs"
    outcomes = [f"{verb} {layout.blob(NAME, digest(blob))}" for blob in POOL for verb in ("deleted", "kept-claimed")]
    assert any(outcome in run for outcome in outcomes for run in runs), "pushes should meet blobs being expired"

    storage = open_storage(settings)
    with ExitStack() as stack:
        if settings.storage == "s3":
            share = stack.enter_context(StaticBucketServer(request.getfixturevalue("s3_server"), settings.s3_bucket))
            base_url = share.url
        else:
            base_url = proxy.url
        for tag, expected in pushed.items():
            found = pulled(base_url, tag)
            assert found == expected or (found is None and tag.startswith("tmp-")), tag
    time.sleep(WATCH_SECONDS * 3)  # the replicas see the last run end
    gc(storage, delete=True, grace_seconds=0, policy=POLICY, timing=TIMING, out=io.StringIO())
    left = [key for key in storage.list(layout.GC_STATE) if not key.startswith(layout.GC_PARTICIPANTS)]
    assert left == [], "runs leave nothing behind (the running replicas' presences are theirs)"
    out = io.StringIO()
    fsck(storage, out=out)
    assert out.getvalue() == ""


def test_a_tag_retention_deleted_and_pushed_again_is_listed(settings: Settings) -> None:
    """The service had seen the tag in `tags/list`; retention deleted it since: memory must not say "listed"."""
    expire_all = parse({"retention": [{"repositories": ["ci/*"], "keep_last": 0}]})
    with running_registry(settings) as url, httpx.Client(base_url=url, timeout=60) as client:
        push_like_a_client(client, "tmp-1", 1)
        assert client.get(f"/v2/{NAME}/tags/list").json()["tags"] == ["tmp-1"]
        out = io.StringIO()
        gc(open_storage(settings), delete=True, grace_seconds=0, policy=expire_all, timing=TIMING, out=out)
        assert f"deleted {layout.manifest(NAME, 'tmp-1')}" in out.getvalue()
        time.sleep(WATCH_SECONDS * 3)  # the service sees the run end
        push_like_a_client(client, "tmp-1", 1)  # its blobs went too: uploaded again
        assert client.get(f"/v2/{NAME}/tags/list").json()["tags"] == ["tmp-1"]
