"""One `gc --delete` run at a time: a second finds the first's announcement and stops with nothing done; the
announcement of a gc that died long ago is taken over, with what it left."""

from __future__ import annotations

import io
import json
import os
import time

import pytest

from app import layout
from app.settings import Settings
from app.storage import Storage
from app.tools.gc import gc
from app.tools.gc_run import STALE_SECONDS, GcRunning
from tests.tools.conftest import QUICK

DEAD = "19990101T000000-dead"


def announce_dead_run(storage: Storage) -> None:
    storage.put_bytes(layout.GC_RUN, json.dumps({"id": DEAD, "phase": "marked"}).encode(), layout.JSON)
    storage.put_bytes(layout.gc_claim(DEAD, layout.blob("a/b", "sha256:" + "0" * 64)), b"", layout.TEXT)


@pytest.mark.parametrize("settings", ["filesystem"], indirect=True)
def test_a_second_run_stops_and_a_dead_one_is_taken_over(settings: Settings, storage: Storage) -> None:
    announce_dead_run(storage)
    with pytest.raises(GcRunning, match=f"gc run {DEAD} is under way"):
        gc(storage, delete=True, grace_seconds=0, timing=QUICK, out=io.StringIO())
    assert set(storage.list(layout.GC_STATE)) == {
        layout.GC_RUN,
        layout.gc_claim(DEAD, layout.blob("a/b", "sha256:" + "0" * 64)),
    }

    long_ago = time.time() - STALE_SECONDS - 60
    os.utime(settings.data_dir / layout.GC_RUN, (long_ago, long_ago))
    gc(storage, delete=True, grace_seconds=0, timing=QUICK, out=io.StringIO())
    assert list(storage.list(layout.GC_STATE)) == []
