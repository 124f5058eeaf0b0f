"""The embedded default store: objects are files at their keys under a directory.

The directory has the bucket's exact layout, so it can be uploaded to Storj as it is. Each object's
Content-Type and Cache-Control live in a JSON sidecar under `.meta/`, written before the object is moved
into place so that a visible object always has its metadata.

An object and its sidecar are two files, so every write of a key, and every read of a small object with its
metadata, holds that key's lock (`flock` on one of `LOCK_STRIPES` files under `.meta/.locks/`, so processes
sharing the directory are serialised too): a reader never pairs one writer's bytes with another's Content-Type,
and create-only (`if_absent`) and conditional (`if_match`) writes are decided and done in one step.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path

from app.storage.base import (
    READ_CHUNK,
    KeyBlocked,
    KeyInvalid,
    ObjectExists,
    ObjectInfo,
    PreconditionFailed,
    StorageFault,
    check_key,
)

META_DIR = ".meta"
TMP_DIR = ".tmp"
LOCKS_DIR = ".locks"  # under META_DIR
LOCK_STRIPES = 64


def _object_key(key: str, *, prefix: bool = False) -> str:
    """A key (or listing prefix) of the layout's grammar that is not in the store's own `.meta/` or `.tmp/`."""
    if key.startswith("."):
        raise KeyInvalid("key outside the store's objects", detail={"key": key[:300]})
    return check_key(key, prefix=prefix)


class FilesystemStorage:
    conditional_overwrite = True

    def __init__(self, root: Path, *, create: bool = True) -> None:
        """Open the store at `root`, creating it unless `create` is false (inspection tools never create one)."""
        self.root = root.resolve()
        if not create and not (self.root / META_DIR).is_dir():
            raise StorageFault(f"no store at {self.root}: nothing was ever pushed there")
        (self.root / TMP_DIR).mkdir(parents=True, exist_ok=True)
        (self.root / META_DIR / LOCKS_DIR).mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def _locked(self, key: str, *, shared: bool = False) -> Iterator[None]:
        """Hold `key`'s lock (one of LOCK_STRIPES, by a hash of the key) against every process on this directory."""
        stripe = zlib.crc32(key.encode()) % LOCK_STRIPES
        fd = os.open(self.root / META_DIR / LOCKS_DIR / f"{stripe:02d}", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _path(self, key: str) -> Path:
        """The file of `key`: a key outside the layout's grammar is refused, never resolved (`a/../b` is not `b`)."""
        path = self.root / _object_key(key)
        if self.root not in path.resolve().parents:  # a symbolic link leading out of the store
            raise KeyInvalid("key outside the store's objects", detail={"key": key[:300]})
        return path

    def _meta_path(self, key: str) -> Path:
        return self.root / META_DIR / (key + ".json")

    def stat(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        with self._locked(key, shared=True):
            return self._stat(key, path)

    def _stat(self, key: str, path: Path) -> ObjectInfo | None:
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not os.path.isfile(path):
            return None
        meta = self._read_meta(key)
        return ObjectInfo(
            size=st.st_size,
            content_type=meta.get("content_type", "application/octet-stream"),
            cache_control=meta.get("cache_control"),
            last_modified=st.st_mtime,
            etag=_etag(st),
            digest=meta.get("digest"),
        )

    def _read_meta(self, key: str) -> dict[str, str]:
        try:
            return json.loads(self._meta_path(key).read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def read(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        try:
            handle = open(self._path(key), "rb")  # noqa: SIM115 - closed by the generator
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise KeyError(key) from None
        return self._stream(handle, start, end)

    @staticmethod
    def _stream(handle, start: int, end: int | None) -> Iterator[bytes]:
        with handle:
            handle.seek(start)
            remaining = None if end is None else end - start + 1
            while remaining is None or remaining > 0:
                chunk = handle.read(READ_CHUNK if remaining is None else min(READ_CHUNK, remaining))
                if not chunk:
                    return
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk

    def read_small(self, key: str) -> tuple[bytes, ObjectInfo] | None:
        path = self._path(key)
        with self._locked(key, shared=True):
            info = self._stat(key, path)
            if info is None:
                return None
            try:
                data = path.read_bytes()
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                return None
        return data, info

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
        with self._temp_file() as temp:
            temp.write_bytes(data)
            meta = _meta(content_type, cache_control, digest)
            return self._publish(temp, key, meta, if_absent=if_absent, if_match=if_match)

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
        """Publish a copy of the first `length` bytes (all when None) of a staged file, never a hard link to it.

        The staged file belongs to an upload session, which can outlive the publish (a crash before the session
        is discarded) and be appended to again: a shared inode would change the published object.
        """
        with self._temp_file() as temp:
            _copy_prefix(path, temp, length)
            self._publish(temp, key, _meta(content_type, cache_control), if_absent=if_absent)

    def copy(self, source: str, destination: str, *, if_absent: bool = False) -> None:
        with self._temp_file() as temp:
            with self._locked(source, shared=True):
                info = self._stat(source, self._path(source))
                if info is None:
                    raise KeyError(source)
                try:  # published objects are only ever replaced whole, never in place: they may share an inode
                    os.link(self._path(source), temp)
                except OSError:
                    shutil.copyfile(self._path(source), temp)
            meta = _meta(info.content_type, info.cache_control, info.digest)
            self._publish(temp, destination, meta, if_absent=if_absent)

    def delete(self, key: str) -> None:
        paths = (self._path(key), self._meta_path(key))
        with self._locked(key):
            for path in paths:
                with contextlib.suppress(FileNotFoundError, IsADirectoryError, NotADirectoryError):
                    path.unlink()

    def list(self, prefix: str) -> Iterator[str]:
        _object_key(prefix, prefix=True)
        base = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root
        if not base.is_dir():
            return
        for directory, dirnames, filenames in os.walk(base):
            if directory == str(self.root):
                dirnames[:] = [d for d in dirnames if d not in (META_DIR, TMP_DIR)]
            for filename in filenames:
                key = os.path.relpath(os.path.join(directory, filename), self.root)
                if key.startswith(prefix):
                    yield key

    def list_children(self, prefix: str) -> Iterator[str]:
        return (entry.name for entry in self._files_in(prefix))

    def list_children_sized(self, prefix: str) -> Iterator[tuple[str, int]]:
        return ((entry.name, entry.stat().st_size) for entry in self._files_in(prefix))

    def list_children_etags(self, prefix: str) -> Iterator[tuple[str, str | None]]:
        return ((entry.name, _etag(entry.stat())) for entry in self._files_in(prefix))

    def _files_in(self, prefix: str) -> Iterator[os.DirEntry[str]]:
        directory = self.root / _object_key(prefix, prefix=True)
        if not prefix.endswith("/") or not directory.is_dir():
            return
        for entry in os.scandir(directory):
            if entry.is_file():
                yield entry

    def check(self) -> None:
        if not os.access(self.root, os.W_OK):
            raise StorageFault(f"data directory {self.root} is not writable")

    @contextlib.contextmanager
    def _temp_file(self) -> Iterator[Path]:
        """A fresh path in the temp folder, removed when the block ends however it ends (moved into place or not)."""
        handle, name = tempfile.mkstemp(dir=self.root / TMP_DIR)
        os.close(handle)
        os.unlink(name)
        path = Path(name)
        try:
            yield path
        finally:
            path.unlink(missing_ok=True)

    def _publish(
        self, temp: Path, key: str, meta: dict[str, str | None], *, if_absent: bool = False, if_match: str | None = None
    ) -> str:
        """Move `temp` into place at `key` with its sidecar, under the key's lock; returns the new etag."""
        target = self._path(key)
        meta_path = self._meta_path(key)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            meta_path.parent.mkdir(parents=True, exist_ok=True)
            with self._locked(key):
                self._check_precondition(key, target, if_absent=if_absent, if_match=if_match)
                if target.is_dir():
                    raise IsADirectoryError(errno.EISDIR, "a folder of other objects is at this key", str(target))
                with self._temp_file() as meta_temp:
                    meta_temp.write_text(json.dumps(meta))
                    os.replace(meta_temp, meta_path)
                os.replace(temp, target)
                return _etag(target.stat())
        except (FileExistsError, NotADirectoryError, IsADirectoryError) as exc:
            raise KeyBlocked(f"cannot write {key}: it overlaps another object's path ({exc.strerror})") from None

    @staticmethod
    def _check_precondition(key: str, target: Path, *, if_absent: bool, if_match: str | None) -> None:
        if not if_absent and if_match is None:
            return
        try:
            current = _etag(target.stat()) if target.is_file() else None
        except FileNotFoundError:
            current = None
        if if_absent and current is not None:
            raise ObjectExists(key)
        if if_match is not None and current != if_match:
            raise PreconditionFailed(key)


def _etag(st: os.stat_result) -> str:
    """A version of a file: every write replaces the file (a new inode) and stamps its time in nanoseconds."""
    return f'"{st.st_ino:x}-{st.st_mtime_ns:x}-{st.st_size:x}"'


def _meta(content_type: str, cache_control: str | None, digest: str | None = None) -> dict[str, str | None]:
    meta = {"content_type": content_type, "cache_control": cache_control}
    return meta | {"digest": digest} if digest else meta


def _copy_prefix(source: Path, destination: Path, length: int | None) -> None:
    """Copy the first `length` bytes of `source` (all of it when None), in the kernel where it can."""
    if length is None:
        shutil.copyfile(source, destination)
        return
    with open(source, "rb") as reader, open(destination, "wb") as writer:
        remaining = length
        while remaining > 0:
            sent = os.sendfile(writer.fileno(), reader.fileno(), length - remaining, remaining)
            if sent == 0:
                raise StorageFault(f"{source} is shorter than the {length} bytes to publish")
            remaining -= sent
