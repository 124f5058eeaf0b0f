"""Every writer takes part in a gc run, whatever way it came in: a replica started during a run and `copy` read
the announcement before their first write (not one watch interval later) and claim the candidates they rely on,
so the run keeps them."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app import layout
from app.registry import build_registry, gc_runs
from app.registry.gc_runs import PHASE_MARKED
from app.settings import Settings
from app.storage import Storage, open_storage
from app.tools.gc import gc
from app.tools.gc_run import GcRun, RunTiming
from app.tools.inventory import Progress
from tests.conftest import filesystem_settings
from tests.mirror.conftest import cli as cli
from tests.support.images import make_layer, oci_ref, write_image
from tests.support.pushing import OCI_MANIFEST, digest, image_manifest, push_blob
from tests.support.registry_server import running_registry

NAME = "gc/app"
CONFIG = b'{"architecture":"amd64","os":"linux"}'


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # The watch at its longest: only the read at start can tell these processes a run is on.
    return filesystem_settings(tmp_path, gc_watch_seconds=300)


@contextlib.contextmanager
def marked_run(storage: Storage, candidates: list[str]) -> Iterator[GcRun]:
    """A gc run that has marked `candidates`, as a replica finds it; ended when the block ends."""
    run = GcRun(storage, RunTiming(0, 0), Progress("gc"))
    run.announce()
    storage.put_bytes(layout.gc_candidates(run.id), json.dumps(candidates).encode(), layout.JSON)
    run.write_phase(PHASE_MARKED)
    try:
        yield run
    finally:
        run.end()


def claims(storage: Storage, run: GcRun) -> set[str]:
    prefix = layout.gc_claims(run.id)
    return {key.removeprefix(prefix) for key in storage.list(prefix)}


def test_a_replica_started_during_a_run_claims_what_its_push_relies_on(settings: Settings) -> None:
    layer = b"a layer gc is about to delete" * 100
    with running_registry(settings) as url, httpx.Client(base_url=url) as http:
        for blob in (CONFIG, layer):
            push_blob(http, NAME, blob)
    storage = open_storage(settings)
    keys = [layout.blob(NAME, digest(blob)) for blob in (CONFIG, layer)]
    with marked_run(storage, keys) as run:
        with running_registry(settings) as url, httpx.Client(base_url=url) as http:  # a new replica, mid-run
            assert http.head(f"/v2/{NAME}/blobs/{digest(layer)}").status_code == 200
            manifest = image_manifest(CONFIG, [layer])
            pushed = http.put(f"/v2/{NAME}/manifests/v1", content=manifest, headers={"Content-Type": OCI_MANIFEST})
            assert pushed.status_code == 201, pushed.text
        assert set(keys) <= claims(storage, run)


def test_copy_during_a_run_claims_the_blobs_it_finds_in_the_bucket(settings: Settings, cli, tmp_path: Path) -> None:
    layers = [make_layer(7, 4096)]
    image = write_image(tmp_path / "image", "v1", layers)
    assert cli(settings, "copy", oci_ref(tmp_path / "image", "v1"), f"{NAME}:v1").status == 0
    storage = open_storage(settings)
    keys = [layout.blob(NAME, layer_digest) for layer_digest in image.layer_digests]
    with marked_run(storage, keys) as run:
        again = cli(settings, "copy", oci_ref(tmp_path / "image", "v1"), f"{NAME}:v2")
        assert again.status == 0, again.err
        assert set(keys) <= claims(storage, run)


def first_read_held(
    storage: Storage, key: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[threading.Event, threading.Event]:
    """The first read of `key` is made, then held until the second event is set (the first is set once it is)."""
    read, release = threading.Event(), threading.Event()
    read_small = storage.read_small

    def held(wanted: str) -> object:
        found = read_small(wanted)
        if wanted == key and not read.is_set():
            read.set()
            release.wait(10)
        return found

    monkeypatch.setattr(storage, "read_small", held)
    return read, release


def test_a_claim_while_the_announcement_is_being_read_waits_for_the_run(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The regression of a `copy` that claimed nothing (seen once in CI): its start-up was reading a marked run's
    candidates when the first blob check came; the process already counted the announcement as read, but knew of
    no run yet, so the check claimed nothing and the run could have deleted the blob the copy relied on."""
    storage = open_storage(settings)
    key = layout.blob(NAME, digest(CONFIG))
    with marked_run(storage, [key]) as marked:
        reading_candidates, release = first_read_held(storage, layout.gc_candidates(marked.id), monkeypatch)
        runs = gc_runs.GcRuns(storage, 300, participate=False)

        async def start_up_and_a_blob_check() -> None:
            start_up = asyncio.create_task(runs.know())
            assert await asyncio.to_thread(reading_candidates.wait, 10)
            check = asyncio.create_task(runs.claim([key]))
            await asyncio.sleep(0.2)  # the check comes while the candidates are read
            release.set()
            await asyncio.gather(start_up, check)

        asyncio.run(start_up_and_a_blob_check())
        assert claims(storage, marked) == {key}


def test_a_read_of_the_announcement_landing_late_does_not_undo_a_newer_one(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The watch and a claim may read the announcement at once. Here the watch's read sees the run announced and
    lands only after a claim's read saw it marked: what the process knows stays the marked run (else, for a
    moment, a check would claim none of the candidates)."""
    storage = open_storage(settings)
    key = layout.blob(NAME, digest(CONFIG))
    run = GcRun(storage, RunTiming(0, 0), Progress("gc"))
    run.announce()
    try:
        read, release = first_read_held(storage, layout.GC_RUN, monkeypatch)
        runs = gc_runs.GcRuns(storage, 300, participate=False)

        async def the_watch_and_a_claim() -> None:
            watch = asyncio.create_task(runs.refresh())
            assert await asyncio.to_thread(read.wait, 10)
            storage.put_bytes(layout.gc_candidates(run.id), json.dumps([key]).encode(), layout.JSON)
            run.write_phase(PHASE_MARKED)
            await runs.refresh()
            release.set()
            await watch

        asyncio.run(the_watch_and_a_claim())
        assert runs.run is not None and runs.run.phase == PHASE_MARKED and key in runs.run.candidates
    finally:
        run.end()


def test_gc_waits_for_a_running_replica_only_until_it_acknowledges(settings: Settings) -> None:
    """No fixed 26 minutes: gc goes on as soon as every live participant has acknowledged each phase."""
    quick = settings.model_copy(update={"gc_watch_seconds": 0.2})
    storage = open_storage(quick)
    key = layout.blob(NAME, digest(CONFIG))
    storage.put_bytes(key, CONFIG, layout.OCTET_STREAM)  # an unreferenced blob no client was told of: a candidate
    with running_registry(quick):
        progress = io.StringIO()
        started = time.monotonic()
        gc(storage, delete=True, grace_seconds=0, timing=RunTiming(120, 120), out=io.StringIO(),
           progress=Progress("gc", stream=progress))  # fmt: skip
        took = time.monotonic() - started
    assert took < 30, progress.getvalue()
    assert "waiting for 1 participant(s) to acknowledge the run" in progress.getvalue()
    assert storage.stat(key) is None
    assert list(storage.list(layout.GC_PARTICIPANTS)) == []  # the replica left when it stopped


def test_a_blob_a_client_was_told_of_before_the_mark_stays_for_its_manifest(settings: Settings) -> None:
    """A push HEADs a blob (200), a run marks it meanwhile, then the push PUTs its manifest: the replica claimed
    what it had promised when it acknowledged the mark, so the run keeps it and the push succeeds."""
    quick = settings.model_copy(update={"gc_watch_seconds": 0.2})
    storage = open_storage(quick)
    layer = b"a layer the client was told of" * 100
    with running_registry(quick) as url, httpx.Client(base_url=url) as http:
        for blob in (CONFIG, layer):
            push_blob(http, NAME, blob)
        assert http.head(f"/v2/{NAME}/blobs/{digest(layer)}").status_code == 200
        gc(storage, delete=True, grace_seconds=0, timing=RunTiming(60, 60), out=io.StringIO())
        manifest = image_manifest(CONFIG, [layer])
        pushed = http.put(f"/v2/{NAME}/manifests/v1", content=manifest, headers={"Content-Type": OCI_MANIFEST})
        assert pushed.status_code == 201, pushed.text
    assert storage.stat(layout.blob(NAME, digest(layer))) is not None


def test_gc_with_its_defaults_and_no_replica_running_takes_seconds(tmp_path: Path) -> None:
    settings = filesystem_settings(tmp_path)
    with running_registry(settings) as url, httpx.Client(base_url=url) as http:
        push_blob(http, NAME, CONFIG)
    env = {**os.environ, "REGISTRY_STORAGE": "filesystem", "REGISTRY_DATA_DIR": str(settings.data_dir)}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "app", "gc", "--delete", "--grace-seconds", "0"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 20, done.stderr
    assert f"deleted {layout.blob(NAME, digest(CONFIG))}" in done.stdout


def test_an_idle_replica_reads_no_announcement_and_gc_need_not_wait_for_it(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An idle replica stops reading `v2/_gc/run` (its presence, rewritten every 5 minutes, says "idle"); a gc run
    counts it as ready at once; its next request writes its presence, then reads the announcement, as at start."""
    monkeypatch.setattr(gc_runs, "IDLE_SECONDS", 0.3)
    calls: list[tuple[str, str]] = []
    storage_class = type(open_storage(settings))
    for method in ("read_small", "put_bytes"):
        original = getattr(storage_class, method)

        def recording(self: Storage, key: str, *args: object, _original=original, _method=method, **kwargs: object):
            calls.append((_method, key))
            return _original(self, key, *args, **kwargs)

        monkeypatch.setattr(storage_class, method, recording)
    settings = settings.model_copy(update={"gc_watch_seconds": 0.05})
    registry = build_registry(settings)
    with running_registry(settings, registry) as url, httpx.Client(base_url=url) as http:
        push_blob(http, NAME, CONFIG)
        deadline = time.monotonic() + 10
        while not registry.gc_runs.resting:
            assert time.monotonic() < deadline, "the replica never rested"
            time.sleep(0.05)
        resting_since = len(calls)
        time.sleep(1)  # twenty watch intervals
        assert ("read_small", layout.GC_RUN) not in calls[resting_since:]
        presence = json.loads(open_storage(settings).read_small(layout.gc_participant(registry.gc_runs.id))[0])
        assert presence["idle"] is True

        out = io.StringIO()
        progress = Progress("gc", stream=out)
        gc(open_storage(settings), delete=True, timing=RunTiming(60, 60), out=io.StringIO(), progress=progress)
        assert "waiting for" not in out.getvalue() and "without the acknowledgement" not in out.getvalue()

        woken_at = len(calls)
        assert http.head(f"/v2/{NAME}/blobs/{digest(CONFIG)}").status_code == 200
        woke = calls[woken_at:]
        presence_write = woke.index(("put_bytes", layout.gc_participant(registry.gc_runs.id)))
        assert woke.index(("read_small", layout.GC_RUN)) > presence_write
        assert not registry.gc_runs.resting
