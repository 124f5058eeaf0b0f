"""The storage interface: a flat key space of objects that each carry a Content-Type and Cache-Control.

Two backends implement it: `filesystem` (the embedded default, a directory in the bucket's layout) and `s3`
(Storj's S3 gateway). Methods are blocking; the registry calls them from worker threads.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from app.errors import NameInvalid

READ_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class ObjectInfo:
    size: int
    content_type: str
    cache_control: str | None = None
    last_modified: float | None = None
    etag: str | None = None  # names this version of the object: what a conditional overwrite (`if_match`) compares
    digest: str | None = None  # stored with a tag's object: the digest its manifest was pushed as


class PreconditionFailed(Exception):
    """A conditional write found the key other than the caller required: present (`if_absent`), or of another
    version than `if_match` named (another writer changed it first)."""


class ObjectExists(PreconditionFailed):
    """A create-only write (`if_absent=True`) found the key already present."""


class StorageFault(Exception):
    """The store could not complete an operation (unreachable, throttled past the retries, refused)."""


class KeyBlocked(StorageFault):
    """The filesystem store cannot put an object at a key: a folder is there, or a file where it needs a folder.

    Names whose keys could overlap are refused (`app.registry.references`); a tree written before that rule can
    still hold such paths, and `fsck` reports them instead of stopping.
    """


class KeyInvalid(NameInvalid, ValueError):
    """A key outside the layout's grammar (an empty, `.` or `..` component, a leading `/`, a backslash or a NUL).

    Keys are spelled by `app.layout` from checked names, tags and digests, so this is a bug or a hostile way in
    that skipped those checks: refused before anything is read or written, never resolved. Should one reach a
    client, it is the OCI error `400 NAME_INVALID`, never a 500.
    """


def check_key(key: str, *, prefix: bool = False) -> str:
    """`key` when it is in the layout's grammar; a listing `prefix` may also be empty or end with `/`."""
    body = key.removesuffix("/") if prefix else key
    if prefix and not body:
        return key
    components = body.split("/")
    if any(part in ("", ".", "..") for part in components) or "\\" in key or "\0" in key:
        raise KeyInvalid("not a key of the layout", detail={"key": key[:300]})
    return key


class Storage(Protocol):
    # Does `put_bytes(..., if_match=etag)` refuse to replace a version other than `etag`? True for the filesystem
    # and memory stores; for S3 it depends on the server (SeaweedFS does, Storj does not promise it), so the S3
    # backend finds out once, on first access (`probe_conditional_overwrite`). Every writer of a derived document
    # must agree on it: the documents are written one way with it and another without (app/registry/documents.py).
    conditional_overwrite: bool

    def stat(self, key: str) -> ObjectInfo | None:
        """Size and metadata of an object, or None when absent."""

    def read(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Stream bytes `start..end` (inclusive end, None = to the last byte). Raises KeyError when absent."""

    def read_small(self, key: str) -> tuple[bytes, ObjectInfo] | None:
        """A whole small object (manifests, lists) with its metadata, or None when absent."""

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
        """Write a small object; returns its new etag when the store tells it.

        With `if_absent`, raise ObjectExists instead of replacing. With `if_match` (and `conditional_overwrite`),
        replace only the version of that etag, else raise PreconditionFailed. `digest` is stored with the object
        (`ObjectInfo.digest`): a tag names the digest its manifest was pushed as.
        """

    def put_file(
        self, key: str, path: Path, content_type: str, cache_control: str | None = None, *, if_absent: bool = False
    ) -> None:
        """Write a staged file as one object; it becomes visible only once complete.

        With `if_absent`, raise ObjectExists when the key is already there (a content-addressed object: the same
        bytes), instead of writing it again: Storj takes about one write per second to a key.
        """

    def copy(self, source: str, destination: str, *, if_absent: bool = False) -> None:
        """Server-side copy, keeping the source's metadata. Raises KeyError when the source is absent.

        With `if_absent`, raise ObjectExists when the destination is already there.
        """

    def delete(self, key: str) -> None:
        """Remove an object; absent keys are not an error."""

    def list(self, prefix: str) -> Iterator[str]:
        """Every key under `prefix`, in no particular order."""

    def list_children(self, prefix: str) -> Iterator[str]:
        """Keys directly under `prefix` (no further `/`), returned relative to it."""

    def list_children_sized(self, prefix: str) -> Iterator[tuple[str, int]]:
        """Like `list_children`, with each object's size: one listing answers many existence questions."""

    def list_children_etags(self, prefix: str) -> Iterator[tuple[str, str | None]]:
        """Like `list_children`, with each object's etag (as `stat` gives it): which of them holds given bytes."""

    def check(self) -> None:
        """Raise StorageFault when the store cannot be reached (readiness probe)."""


@runtime_checkable
class MultipartStorage(Protocol):
    """A store that takes one object in numbered parts (S3 multipart uploads), invisible until completed.

    It lets an upload session send its bytes to the bucket while the client is still sending them.
    """

    part_size: int
    max_concurrency: int

    def begin_multipart(self, key: str, content_type: str, cache_control: str | None = None) -> str:
        """Start a multipart upload at `key`; returns its upload id."""

    def put_part(self, key: str, upload_id: str, number: int, path: Path, offset: int, length: int) -> str:
        """Send `length` bytes of `path` from `offset` as part `number` (1-based); returns the part's ETag."""

    def complete_multipart(self, key: str, upload_id: str, etags: list[str], *, if_absent: bool = False) -> None:
        """Assemble parts 1..len(etags) into the object. Raises KeyError when the upload no longer exists.

        With `if_absent`, raise ObjectExists when the key is already there (the upload stays open: abort it).
        """

    def abort_multipart(self, key: str, upload_id: str) -> None:
        """Drop an unfinished multipart upload and its parts; an unknown upload is not an error."""

    def unfinished_multipart(self) -> Iterator[tuple[str, str, float]]:
        """Every multipart upload still open under the store's prefix: (key, upload id, started at)."""
