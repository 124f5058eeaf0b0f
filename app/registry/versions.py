"""The chains of versions of derived documents, as stored where the store does not honour If-Match: listing
them, reading one, and telling which version a document's bytes are. Why chains exist and how they are written:
app/registry/documents.py."""

from __future__ import annotations

from app import layout
from app.storage import ObjectInfo, Storage

Listing = list[tuple[int, str | None]]  # (number, etag) of each version, newest first


def listed(storage: Storage, document: str) -> Listing:
    """The versions of `document` (a chain keeps a few: one listing page)."""
    prefix = layout.document_versions(document)
    found = (
        (layout.version_number(document, prefix + name), etag) for name, etag in storage.list_children_etags(prefix)
    )
    return sorted(((number, etag) for number, etag in found if number is not None), reverse=True)


def read(storage: Storage, document: str, number: int) -> bytes | None:
    found = storage.read_small(layout.document_version(document, number))
    return None if found is None else found[0]


def holding(listing: Listing, document: tuple[bytes, ObjectInfo] | None) -> int | None:
    """The number of the newest version if the document holds its very bytes (the same etag), else None: then
    the document read stands for that version, and the version need not be read too."""
    if not listing or document is None or document[1].etag is None:
        return None
    number, etag = listing[0]
    return number if etag == document[1].etag else None
