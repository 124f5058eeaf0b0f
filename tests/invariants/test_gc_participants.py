"""Every writer takes part in a gc run, whatever way it came in: a replica started during a run and `copy` read
the announcement before their first write (not one watch interval later) and claim the candidates they rely on,
so the run keeps them."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app import layout
from app.registry.gc_runs import PHASE_MARKED
from app.settings import Settings
from app.storage import Storage, open_storage
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
