"""StagedParts against an in-memory multipart store: what is sent, when, and what a restart skips."""

from __future__ import annotations

from concurrent.futures import Executor, Future
from pathlib import Path
from typing import Any

from app.registry.parts import PartSender

PART = 8


class MemoryStore:
    """Just enough of `MultipartStorage` to see every request."""

    part_size = PART
    max_concurrency = 2

    def __init__(self) -> None:
        self.sent: list[int] = []
        self.objects: dict[str, bytes] = {}
        self.pending: dict[str, dict[int, bytes]] = {}

    def begin_multipart(self, key: str, content_type: str, cache_control: str | None = None) -> str:
        self.pending[key] = {}
        return key

    def put_part(self, key: str, upload_id: str, number: int, path: Path, offset: int, length: int) -> str:
        with path.open("rb") as handle:
            handle.seek(offset)
            self.pending[upload_id][number] = handle.read(length)
        self.sent.append(number)
        return f"etag-{number}"

    def complete_multipart(self, key: str, upload_id: str, etags: list[str], *, if_absent: bool = False) -> None:
        parts = self.pending.pop(upload_id)
        self.objects[key] = b"".join(parts[number] for number in range(1, len(etags) + 1))

    def abort_multipart(self, key: str, upload_id: str) -> None:
        self.pending.pop(upload_id, None)

    def copy(self, source: str, destination: str, *, if_absent: bool = False) -> None:
        self.objects[destination] = self.objects[source]

    def delete(self, key: str) -> None:
        self.objects.pop(key, None)

    def stat(self, key: str) -> Any:
        return None


class InlineExecutor(Executor):
    """Runs each task at once: its future is done before `submit` returns (the race that once deadlocked)."""

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        future.set_result(fn(*args, **kwargs))
        return future


def session(tmp_path: Path, store: MemoryStore, data: bytes) -> Any:
    directory = tmp_path / "upload"
    directory.mkdir(exist_ok=True)
    (directory / "data").write_bytes(data)
    return PartSender(store).session(directory, "0" * 32, lambda: None)


def test_full_parts_go_as_the_file_grows_and_the_tail_at_publish(tmp_path: Path) -> None:
    store = MemoryStore()
    data = bytes(range(2 * PART + 3))
    parts = session(tmp_path, store, data)
    parts.advance(len(data))
    parts.settle()
    assert sorted(store.sent) == [1, 2]
    assert parts.publish(len(data), "v2/a/blobs/x")
    assert store.objects == {"v2/a/blobs/x": data}  # the staging object was copied, then deleted
    assert sorted(store.sent) == [1, 2, 3]


def test_a_new_process_does_not_resend_the_parts_already_sent(tmp_path: Path) -> None:
    store = MemoryStore()
    data = bytes(range(3 * PART))
    first = session(tmp_path, store, data)
    first.advance(2 * PART)
    first.settle()
    second = session(tmp_path, store, data)  # a restart: nothing in memory, parts.json on disk
    second.advance(3 * PART)
    second.settle()
    assert sorted(store.sent) == [1, 2, 3]
    assert second.publish(len(data), "v2/a/blobs/x")
    assert store.objects["v2/a/blobs/x"] == data


def test_parts_that_finish_before_their_callback_is_attached_do_not_deadlock(tmp_path: Path) -> None:
    store = MemoryStore()
    parts = session(tmp_path, store, bytes(5 * PART))
    parts.sender.pool = InlineExecutor()
    parts.advance(5 * PART)
    parts.settle()
    assert store.sent == [1, 2, 3, 4, 5]
