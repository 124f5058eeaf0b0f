"""Files of a local image source, in a directory or inside an uncompressed tar, and streaming them.

Files inside a tar are read in place (an offset and a length in the archive), each reader with its own file
handle, so several blobs stream at once and nothing is extracted or held whole in memory.
"""

from __future__ import annotations

import json
import posixpath
import tarfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio.to_thread

from app.mirror.source import STREAM_CHUNK, SourceError

COMPRESSED_MAGIC = (b"\x1f\x8b", b"\x28\xb5\x2f\xfd")  # gzip, zstd
MAX_SMALL_FILE = 16 * 1024 * 1024


@dataclass(frozen=True)
class Extent:
    """Where a file's bytes are: `length` bytes of `path` from `offset` (None: to the end of the file)."""

    path: Path
    offset: int = 0
    length: int | None = None


class Directory:
    """Files under a directory."""

    def __init__(self, root: Path) -> None:
        if not root.is_dir():
            raise SourceError(f"{root} is not a directory")
        self.root = root

    def extent(self, name: str) -> Extent:
        path = self.root / name
        if not path.exists():
            raise SourceError(f"{name} is missing from {self.root}")
        return Extent(path)


class Archive:
    """Files inside an uncompressed tar, located once by reading the headers."""

    def __init__(self, path: Path) -> None:
        try:
            with path.open("rb") as handle:
                if handle.read(4).startswith(COMPRESSED_MAGIC):
                    raise SourceError(f"{path} is compressed: decompress it first (gunzip, zstd -d)")
            with tarfile.open(path, "r:") as tar:
                self.members = {posixpath.normpath(member.name): member for member in tar.getmembers()}
        except (OSError, tarfile.TarError) as exc:
            raise SourceError(f"cannot read the archive {path}: {exc}") from exc
        self.path = path

    def extent(self, name: str) -> Extent:
        member = self._resolve(posixpath.normpath(name), hops=0)
        return Extent(self.path, member.offset_data, member.size)

    def _resolve(self, name: str, hops: int) -> tarfile.TarInfo:
        member = self.members.get(name)
        if member is None or hops > 8:
            raise SourceError(f"{name} is missing from the archive {self.path}")
        if member.issym():
            return self._resolve(posixpath.normpath(posixpath.join(posixpath.dirname(name), member.linkname)), hops + 1)
        if member.islnk():
            return self._resolve(posixpath.normpath(member.linkname), hops + 1)
        if not member.isfile():
            raise SourceError(f"{name} in {self.path} is not a file")
        return member


Files = Directory | Archive


def read_small(files: Files, name: str, limit: int = MAX_SMALL_FILE) -> bytes:
    """A whole small file; one larger than `limit` bytes is refused, having read no more than that."""
    extent = files.extent(name)
    wanted = limit + 1 if extent.length is None else min(extent.length, limit + 1)
    try:
        with extent.path.open("rb") as handle:
            handle.seek(extent.offset)
            data = handle.read(wanted)
    except OSError as exc:
        raise SourceError(f"cannot read {name}: {exc}") from exc
    if len(data) > limit:
        raise SourceError(f"{name} is larger than {limit} bytes")
    return data


def read_json(files: Files, name: str) -> Any:
    try:
        return json.loads(read_small(files, name))
    except ValueError as exc:
        raise SourceError(f"{name} is not valid JSON") from exc


@asynccontextmanager
async def stream(extent: Extent) -> AsyncIterator[AsyncIterator[bytes]]:
    """The extent's bytes in chunks, read in a worker thread (the event loop keeps feeding the upload)."""
    try:
        handle = await anyio.to_thread.run_sync(extent.path.open, "rb")
    except OSError as exc:
        raise SourceError(f"cannot read {extent.path}: {exc}") from exc

    async def chunks() -> AsyncIterator[bytes]:
        try:
            if extent.offset:  # a file in an archive (a plain file, or a pipe, is read from its start)
                await anyio.to_thread.run_sync(handle.seek, extent.offset)
            left = extent.length
            while left is None or left > 0:
                size = STREAM_CHUNK if left is None else min(STREAM_CHUNK, left)
                chunk = await anyio.to_thread.run_sync(handle.read, size)
                if not chunk:
                    return
                if left is not None:
                    left -= len(chunk)
                yield chunk
        except OSError as exc:
            raise SourceError(f"cannot read {extent.path}: {exc}") from exc

    try:
        yield chunks()
    finally:
        handle.close()
