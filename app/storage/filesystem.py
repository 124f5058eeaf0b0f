"""The embedded default store: objects are files at their keys under a directory.

The directory has the bucket's exact layout, so it can be uploaded to Storj as it is. Each object's
Content-Type and Cache-Control live in a JSON sidecar under `.meta/`, written before the object is moved
into place so that a visible object always has its metadata.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from app.storage.base import READ_CHUNK, KeyBlocked, KeyInvalid, ObjectExists, ObjectInfo, StorageFault, check_key

META_DIR = ".meta"
TMP_DIR = ".tmp"


def _object_key(key: str, *, prefix: bool = False) -> str:
    """A key (or listing prefix) of the layout's grammar that is not in the store's own `.meta/` or `.tmp/`."""
    if key.startswith("."):
        raise KeyInvalid("key outside the store's objects", detail={"key": key[:300]})
    return check_key(key, prefix=prefix)


class FilesystemStorage:
    def __init__(self, root: Path, *, create: bool = True) -> None:
        """Open the store at `root`, creating it unless `create` is false (inspection tools never create one)."""
        self.root = root.resolve()
        if not create and not (self.root / META_DIR).is_dir():
            raise StorageFault(f"no store at {self.root}: nothing was ever pushed there")
        (self.root / TMP_DIR).mkdir(parents=True, exist_ok=True)
        (self.root / META_DIR).mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        """The file of `key`: a key outside the layout's grammar is refused, never resolved (`a/../b` is not `b`)."""
        path = self.root / _object_key(key)
        if self.root not in path.resolve().parents:  # a symbolic link leading out of the store
            raise KeyInvalid("key outside the store's objects", detail={"key": key[:300]})
        return path

    def _meta_path(self, key: str) -> Path:
        return self.root / META_DIR / (key + ".json")

    def stat(self, key: str) -> ObjectInfo | None:
        try:
            st = self._path(key).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not os.path.isfile(self._path(key)):
            return None
        meta = self._read_meta(key)
        return ObjectInfo(
            size=st.st_size,
            content_type=meta.get("content_type", "application/octet-stream"),
            cache_control=meta.get("cache_control"),
            last_modified=st.st_mtime,
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
        info = self.stat(key)
        if info is None:
            return None
        try:
            data = self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        return data, ObjectInfo(len(data), info.content_type, info.cache_control, info.last_modified)

    def put_bytes(
        self,
        key: str,
        data: bytes,
        content_type: str,
        cache_control: str | None = None,
        *,
        if_absent: bool = False,
    ) -> None:
        with self._temp_file() as temp:
            temp.write_bytes(data)
            self._publish(temp, key, content_type, cache_control, if_absent=if_absent)

    def put_file(
        self, key: str, path: Path, content_type: str, cache_control: str | None = None, *, if_absent: bool = False
    ) -> None:
        """Publish a copy of a staged file, never a hard link to it.

        The staged file belongs to an upload session, which can outlive the publish (a crash before the session
        is discarded) and be appended to again: a shared inode would change the published object.
        """
        with self._temp_file() as temp:
            shutil.copyfile(path, temp)
            self._publish(temp, key, content_type, cache_control, if_absent=if_absent)

    def copy(self, source: str, destination: str, *, if_absent: bool = False) -> None:
        info = self.stat(source)
        if info is None:
            raise KeyError(source)
        with self._temp_file() as temp:
            try:  # published objects are only ever replaced whole, never written in place: they may share an inode
                os.link(self._path(source), temp)
            except OSError:
                shutil.copyfile(self._path(source), temp)
            self._publish(temp, destination, info.content_type, info.cache_control, if_absent=if_absent)

    def delete(self, key: str) -> None:
        for path in (self._path(key), self._meta_path(key)):
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
        self, temp: Path, key: str, content_type: str, cache_control: str | None, *, if_absent: bool = False
    ) -> None:
        target = self._path(key)
        meta = self._meta_path(key)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            meta.parent.mkdir(parents=True, exist_ok=True)
            if if_absent and target.exists():
                raise ObjectExists(key)
            if target.is_dir():
                raise IsADirectoryError(errno.EISDIR, "a folder of other objects is at this key", str(target))
            with self._temp_file() as meta_temp:
                meta_temp.write_text(json.dumps({"content_type": content_type, "cache_control": cache_control}))
                os.replace(meta_temp, meta)
            os.replace(temp, target)
        except (FileExistsError, NotADirectoryError, IsADirectoryError) as exc:
            raise KeyBlocked(f"cannot write {key}: it overlaps another object's path ({exc.strerror})") from None
