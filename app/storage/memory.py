"""An in-memory store: the storage contract with nothing behind it, for unit tests and the contract suite.

It keeps the same promises as the real backends (create-only and conditional writes decided atomically, an
object's bytes and metadata replaced together, listings of what is there now) and can count its calls, so the
registry's logic can be driven fast, with a fake clock and many writers, before the same tests run on SeaweedFS.
Never used by the service itself: `REGISTRY_STORAGE` offers only `filesystem` and `s3`.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from app.storage.base import READ_CHUNK, ObjectExists, ObjectInfo, PreconditionFailed


@dataclass(frozen=True)
class _Object:
    data: bytes
    info: ObjectInfo


class MemoryStorage:
    conditional_overwrite = True

    def __init__(self) -> None:
        self._objects: dict[str, _Object] = {}
        self._lock = threading.Lock()
        self._versions = itertools.count(1)
        self.calls: Counter[str] = Counter()  # by method, for tests that count what an operation costs

    def stat(self, key: str) -> ObjectInfo | None:
        self.calls["stat"] += 1
        found = self._objects.get(key)
        return found.info if found else None

    def read(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        self.calls["read"] += 1
        found = self._objects.get(key)
        if found is None:
            raise KeyError(key)
        data = found.data[start : None if end is None else end + 1]
        return iter([data[i : i + READ_CHUNK] for i in range(0, len(data), READ_CHUNK)])

    def read_small(self, key: str) -> tuple[bytes, ObjectInfo] | None:
        self.calls["read_small"] += 1
        found = self._objects.get(key)
        return (found.data, found.info) if found else None

    def put_bytes(
        self,
        key: str,
        data: bytes,
        content_type: str,
        cache_control: str | None = None,
        *,
        if_absent: bool = False,
        if_match: str | None = None,
        digest: str | None = None,
    ) -> str | None:
        self.calls["put_bytes"] += 1
        return self._put(key, data, content_type, cache_control, digest, if_absent=if_absent, if_match=if_match)

    def put_file(
        self,
        key: str,
        path: Path,
        content_type: str,
        cache_control: str | None = None,
        *,
        if_absent: bool = False,
        length: int | None = None,
    ) -> None:
        self.calls["put_file"] += 1
        with open(path, "rb") as handle:
            data = handle.read() if length is None else handle.read(length)
        self._put(key, data, content_type, cache_control, None, if_absent=if_absent)

    def copy(self, source: str, destination: str, *, if_absent: bool = False) -> None:
        self.calls["copy"] += 1
        found = self._objects.get(source)
        if found is None:
            raise KeyError(source)
        info = found.info
        self._put(destination, found.data, info.content_type, info.cache_control, info.digest, if_absent=if_absent)

    def delete(self, key: str) -> None:
        self.calls["delete"] += 1
        with self._lock:
            self._objects.pop(key, None)

    def list(self, prefix: str) -> Iterator[str]:
        self.calls["list"] += 1
        return iter([key for key in list(self._objects) if key.startswith(prefix)])

    def list_children(self, prefix: str) -> Iterator[str]:
        return (name for name, _ in self.list_children_sized(prefix))

    def list_children_sized(self, prefix: str) -> Iterator[tuple[str, int]]:
        return ((name, info.size) for name, info in self._children(prefix))

    def list_children_etags(self, prefix: str) -> Iterator[tuple[str, str | None]]:
        return ((name, info.etag) for name, info in self._children(prefix))

    def _children(self, prefix: str) -> list[tuple[str, ObjectInfo]]:
        self.calls["list_children"] += 1
        children = []
        for key, found in list(self._objects.items()):
            rest = key[len(prefix) :]
            if key.startswith(prefix) and rest and "/" not in rest:
                children.append((rest, found.info))
        return children

    def check(self) -> None:
        return None

    def _put(
        self,
        key: str,
        data: bytes,
        content_type: str,
        cache_control: str | None,
        digest: str | None,
        *,
        if_absent: bool = False,
        if_match: str | None = None,
    ) -> str:
        with self._lock:
            current = self._objects.get(key)
            if if_absent and current is not None:
                raise ObjectExists(key)
            if if_match is not None and (current is None or current.info.etag != if_match):
                raise PreconditionFailed(key)
            etag = f'"{next(self._versions)}"'
            info = ObjectInfo(len(data), content_type, cache_control, time.time(), etag, digest)
            self._objects[key] = _Object(bytes(data), info)
            return etag

    def age(self, key: str, seconds: float) -> None:
        """Make an object look `seconds` older (gc's grace period, retention), as a test's fake clock would."""
        with self._lock:
            found = self._objects[key]
            modified = (found.info.last_modified or 0) - seconds
            self._objects[key] = _Object(found.data, replace(found.info, last_modified=modified))
