"""One `gc --delete` run at a time: a second finds the first's announcement and stops with nothing done; the
announcement of a gc that died long ago is taken over, with what it left."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from app import layout
from app.settings import Settings
from app.storage import Storage
from app.storage.filesystem import FilesystemStorage
from app.storage.memory import MemoryStorage
from app.tools.fsck import fsck
from app.tools.gc import gc
from app.tools.gc_run import ABANDON_AFTER_SECONDS, STALE_SECONDS, GcRunning, RunTiming, abandon
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


SILENT = layout.gc_participant("a-replica-that-never-acknowledges")  # each run waits its bound for it


def test_two_runs_started_together_one_proceeds(tmp_path: Path) -> None:
    """One run at a time is decided by the store (a create-only announcement), not by a read before a write."""
    storage = MemoryStorage()
    storage.put_bytes(SILENT, b"{}", layout.JSON)  # so that the two runs overlap
    start = threading.Barrier(2)

    def run(_: int) -> str:
        start.wait()
        try:
            gc(storage, delete=True, grace_seconds=0, timing=RunTiming(0.5, 0), out=io.StringIO())
        except GcRunning:
            return "stopped"
        return "ran"

    with ThreadPoolExecutor(2) as pool:
        outcomes = sorted(pool.map(run, range(2)))
    assert outcomes == ["ran", "stopped"]
    assert list(storage.list(layout.GC_STATE)) == [SILENT]


def test_a_dead_run_is_taken_over_by_one_of_two(tmp_path: Path) -> None:
    storage = MemoryStorage()
    storage.put_bytes(SILENT, b"{}", layout.JSON)
    announce_dead_run(storage)
    storage.age(layout.GC_RUN, STALE_SECONDS + 60)
    start = threading.Barrier(2)

    def take_over(_: int) -> str:
        start.wait()
        try:
            gc(storage, delete=True, grace_seconds=0, timing=RunTiming(0.5, 0), out=io.StringIO())
        except GcRunning:
            return "stopped"
        return "ran"

    with ThreadPoolExecutor(2) as pool:
        assert sorted(pool.map(take_over, range(2))) == ["ran", "stopped"]
    assert list(storage.list(layout.GC_STATE)) == [SILENT]


def test_sigterm_ends_a_run_as_ctrl_c_does(tmp_path: Path) -> None:
    """A CronJob's deadline, `timeout` or `kill`: the announcement and the run's state go, so the next run
    (and every replica) does not wait for a run that is gone."""
    data = tmp_path / "data"
    store = FilesystemStorage(data)
    store.put_bytes(SILENT, b"{}", layout.JSON)  # gc waits for it
    env = {**os.environ, "REGISTRY_STORAGE": "filesystem", "REGISTRY_DATA_DIR": str(data)}
    command = [sys.executable, "-m", "app", "gc", "--delete", "--settle-seconds", "60", "--mark-seconds", "0"]
    process = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while not (data / layout.GC_RUN).exists():
        assert time.monotonic() < deadline and process.poll() is None, process.stderr.read() if process.stderr else ""
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=20)
    assert process.returncode != 0
    assert b"Traceback" not in stderr, stderr.decode()
    left = set(FilesystemStorage(data).list(layout.GC_STATE))
    assert left == {SILENT}  # the participant's own


def test_abandon_clears_a_silent_run_and_refuses_a_live_one() -> None:
    storage = MemoryStorage()
    announce_dead_run(storage)
    with pytest.raises(GcRunning, match=f"gc run {DEAD} is alive"):
        abandon(storage)
    storage.age(layout.GC_RUN, ABANDON_AFTER_SECONDS + 1)  # gc was killed a minute ago: its heartbeat stopped
    assert abandon(storage).startswith(f"abandoned gc run {DEAD}")
    assert list(storage.list(layout.GC_STATE)) == []
    assert abandon(storage) == "no gc run is announced"


def test_fsck_reports_a_dead_runs_announcement_and_repair_clears_it() -> None:
    storage = MemoryStorage()
    announce_dead_run(storage)
    storage.age(layout.GC_RUN, STALE_SECONDS + 60)
    out = io.StringIO()
    fsck(storage, out=out)
    assert f"PROBLEM stale-gc-run {layout.GC_RUN} its heartbeat stopped" in out.getvalue()
    fsck(storage, repair=True, out=io.StringIO())
    assert storage.stat(layout.GC_RUN) is None
