"""What the copier needs from any source of images, and the errors a source reports."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from app.registry.references import DIGEST_RE, algorithm_of, digest_of

MANIFEST_ACCEPT = ", ".join(
    (
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    )
)
STREAM_CHUNK = 1024 * 1024


class SourceError(Exception):
    """The source cannot give what was asked: unreachable, refused, unknown, or content that fails its digest."""


@dataclass(frozen=True)
class Fetched:
    """A manifest as the source holds it: the exact bytes, their media type and digest."""

    body: bytes
    media_type: str | None
    digest: str


class Source(Protocol):
    """A read-only store of images addressed like a registry repository."""

    def describe(self) -> str:
        """How to name the source in messages."""

    def default_reference(self) -> str | None:
        """The reference the user named (a tag or a digest), or None when the source holds a single image."""

    async def manifest(self, reference: str, media_type: str | None = None, *, limit: int) -> Fetched:
        """The manifest under a tag or digest; `media_type` is the type its parent descriptor declares.

        One larger than `limit` bytes (the registry's `max_manifest_bytes`) is refused before more is read.
        """

    def blob(self, digest: str) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        """The blob's bytes as a stream of chunks (never the whole blob in memory)."""

    async def referrers(self, digest: str) -> list[dict[str, Any]]:
        """Descriptors of the manifests whose `subject` is `digest`."""

    async def tags(self) -> list[str]:
        """Every tag of the repository."""

    async def aclose(self) -> None:
        """Release connections and open files."""


def checked(body: bytes, media_type: str | None, expected: str | None) -> Fetched:
    """A fetched manifest whose bytes must hash to `expected` (when known): digests are preserved exactly."""
    if expected is None:
        return Fetched(body, media_type, digest_of(body))
    if not DIGEST_RE.fullmatch(expected):
        raise SourceError(f"invalid digest {expected[:80]!r}")
    actual = digest_of(body, algorithm_of(expected))
    if actual != expected:
        raise SourceError(f"manifest {expected} has content hashing to {actual}")
    return Fetched(body, media_type, expected)
