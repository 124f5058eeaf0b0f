"""The storage contract every backend keeps: what the registry relies on, proven against each one.

Create-only and conditional writes are decided by the store, atomically, whatever the number of writers; an
object's bytes and metadata are replaced together; a file is published up to the length asked, not beyond.
"""

from __future__ import annotations

import hashlib
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from app.storage import ObjectExists, Storage
from app.storage.base import PreconditionFailed

WRITERS = 8


def at_once(count: int, job) -> list:
    start = threading.Barrier(count)

    def run(index: int):
        start.wait()
        return job(index)

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(run, range(count)))


def test_an_object_keeps_its_metadata_and_digest(store: Storage) -> None:
    etag = store.put_bytes("v2/a/manifests/v1", b"{}", "application/x-test", "no-cache", digest="sha512:" + "0" * 128)
    found = store.read_small("v2/a/manifests/v1")
    assert found is not None
    data, info = found
    assert data == b"{}"
    assert (info.size, info.content_type, info.cache_control) == (2, "application/x-test", "no-cache")
    assert info.digest == "sha512:" + "0" * 128
    assert info.etag and (etag is None or etag == info.etag)
    stat = store.stat("v2/a/manifests/v1")
    assert stat is not None and stat.etag == info.etag and stat.digest == info.digest


def test_create_only_lets_exactly_one_writer_in(store: Storage) -> None:
    def write(index: int) -> bool:
        try:
            store.put_bytes("v2/a/manifests/immutable", f"writer {index}".encode(), "text/plain", if_absent=True)
        except ObjectExists:
            return False
        return True

    won = at_once(WRITERS, write)
    assert sum(won) == 1
    found = store.read_small("v2/a/manifests/immutable")
    assert found is not None and found[0] == f"writer {won.index(True)}".encode()


def test_a_conditional_overwrite_loses_no_update(store: Storage) -> None:
    """Compare-and-swap on the etag: every writer's increment lands, however they interleave."""
    if not store.conditional_overwrite:
        with pytest.raises(Exception):  # noqa: B017 - this store refuses If-Match: callers must not rely on it
            store.put_bytes("v2/counter", b"0", "text/plain", if_match='"none"')
        return
    store.put_bytes("v2/counter", b"0", "text/plain")

    def increment(_: int) -> int:
        attempts = 0
        while True:
            attempts += 1
            data, info = store.read_small("v2/counter")  # type: ignore[misc]
            try:
                store.put_bytes("v2/counter", str(int(data) + 1).encode(), "text/plain", if_match=info.etag)
                return attempts
            except PreconditionFailed:
                continue

    at_once(WRITERS, increment)
    assert store.read_small("v2/counter")[0] == str(WRITERS).encode()  # type: ignore[index]


def test_a_stale_version_is_refused(store: Storage) -> None:
    if not store.conditional_overwrite:
        pytest.skip("this store does not honour If-Match (Storj's rules): the registry does without it")
    first = store.put_bytes("v2/doc", b"1", "text/plain")
    etag = first or store.stat("v2/doc").etag  # type: ignore[union-attr]
    store.put_bytes("v2/doc", b"2", "text/plain")
    with pytest.raises(PreconditionFailed):
        store.put_bytes("v2/doc", b"3", "text/plain", if_match=etag)
    with pytest.raises(PreconditionFailed):
        store.put_bytes("v2/absent", b"3", "text/plain", if_match=etag)
    assert store.read_small("v2/doc")[0] == b"2"  # type: ignore[index]


def test_bytes_and_content_type_change_together(store: Storage) -> None:
    """Writers of one key with different bytes and types, readers meanwhile: never one's bytes with another's type."""
    key = "v2/a/manifests/latest"
    types = {f"body {i}".encode(): f"application/type-{i}" for i in range(WRITERS)}
    stop = threading.Event()
    mismatches: list[tuple[bytes, str]] = []

    def read() -> None:
        while not stop.is_set():
            found = store.read_small(key)
            if found is not None and types[found[0]] != found[1].content_type:
                mismatches.append((found[0], found[1].content_type))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        bodies = list(types)
        at_once(WRITERS, lambda i: [store.put_bytes(key, bodies[i], types[bodies[i]]) for _ in range(5)])
    finally:
        stop.set()
        reader.join()
    assert mismatches == []


def test_a_file_is_published_up_to_the_length_asked(store: Storage, tmp_path: Path) -> None:
    staged = tmp_path / "staged"
    staged.write_bytes(b"verified bytes" + b" appended later")
    store.put_file("v2/a/blobs/b", staged, "application/octet-stream", length=len(b"verified bytes"), if_absent=True)
    assert b"".join(store.read("v2/a/blobs/b")) == b"verified bytes"
    with pytest.raises(ObjectExists):
        store.put_file("v2/a/blobs/b", staged, "application/octet-stream", if_absent=True)


def test_copy_keeps_metadata_and_is_create_only_when_asked(store: Storage) -> None:
    store.put_bytes("v2/a/manifests/t", b"m", "application/x-m", "no-cache", digest="sha256:" + "1" * 64)
    store.copy("v2/a/manifests/t", "v2/b/manifests/t", if_absent=True)
    copied = store.stat("v2/b/manifests/t")
    assert copied is not None
    assert (copied.content_type, copied.cache_control, copied.digest) == (
        "application/x-m",
        "no-cache",
        "sha256:" + "1" * 64,
    )
    with pytest.raises(ObjectExists):
        store.copy("v2/a/manifests/t", "v2/b/manifests/t", if_absent=True)
    with pytest.raises(KeyError):
        store.copy("v2/a/manifests/absent", "v2/c/manifests/t")


def test_reads_ranges_lists_and_deletes(store: Storage) -> None:
    blob = hashlib.sha256(b"x").hexdigest().encode() * 4
    store.put_bytes("v2/a/blobs/x", blob, "application/octet-stream")
    store.put_bytes("v2/a/blobs/y", b"y", "application/octet-stream")
    store.put_bytes("v2/a/manifests/t", b"t", "application/json")
    assert b"".join(store.read("v2/a/blobs/x", 2, 5)) == blob[2:6]
    assert b"".join(store.read("v2/a/blobs/x", 10)) == blob[10:]
    assert sorted(store.list("v2/a/")) == ["v2/a/blobs/x", "v2/a/blobs/y", "v2/a/manifests/t"]
    assert sorted(store.list_children_sized("v2/a/blobs/")) == [("x", len(blob)), ("y", 1)]
    etags = dict(store.list_children_etags("v2/a/blobs/"))
    assert sorted(etags) == ["x", "y"]
    assert etags["x"] == store.stat("v2/a/blobs/x").etag and etags["x"] != etags["y"]  # type: ignore[union-attr]
    assert list(store.list_children("v2/a/")) == []
    store.delete("v2/a/blobs/x")
    store.delete("v2/a/blobs/x")  # absent: not an error
    assert store.stat("v2/a/blobs/x") is None
    assert store.read_small("v2/a/blobs/x") is None
    with pytest.raises(KeyError):
        store.read("v2/a/blobs/x")
