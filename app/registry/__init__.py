"""Registry logic that knows nothing of HTTP: upload sessions, blobs, manifests, and the derived indexes."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from app.registry.blobs import Blobs
from app.registry.catalog_page import CatalogPage
from app.registry.client_sessions import ClientSessions
from app.registry.gc_runs import GcRuns
from app.registry.indexes import Indexes
from app.registry.known import Known
from app.registry.manifests import Manifests
from app.registry.parts import PartSender
from app.registry.policy import PolicyFile, open_policy
from app.registry.sharing import LocationRecords
from app.registry.uploads import Uploads
from app.settings import Settings
from app.storage import Storage, StorageFault, open_storage
from app.storage.base import MultipartStorage

log = logging.getLogger("storj_registry")


@dataclass
class Registry:
    settings: Settings
    storage: Storage
    uploads: Uploads
    indexes: Indexes
    known: Known
    records: LocationRecords
    blobs: Blobs
    manifests: Manifests
    client_sessions: ClientSessions
    page: CatalogPage
    policy: PolicyFile
    gc_runs: GcRuns

    async def warm(self) -> None:
        """At start, off any push's path, read what pushes will ask: whether `v2/index.html` is there, the
        catalog, the blob location records."""
        try:
            await self.indexes.check_index_html()
            await self.indexes.load_catalog()
        except StorageFault as exc:  # the store may come back; pushes then read what they need
            log.warning("could not read the catalog at start: %s", exc)
        if self.settings.share_blobs:
            await self.records.load()

    async def settle(self) -> None:
        """Finish the writes that go on behind answers: verified blobs, location records (before an exit)."""
        await self.blobs.publishing.drain()
        await self.records.settle()


def open_uploads(settings: Settings, storage: Storage | None, *, create: bool = True) -> Uploads:
    """The staging directory's sessions, with S3 multipart uploads overlapped when the store supports them."""
    sender = PartSender(storage) if isinstance(storage, MultipartStorage) else None
    return Uploads(settings.staging_dir, sender, create=create)


def build_registry(settings: Settings, storage: Storage | None = None) -> Registry:
    """Create every long-lived part once, at start-up."""
    storage = storage or open_storage(settings)
    uploads = open_uploads(settings, storage)
    indexes = Indexes(storage)
    gc_runs = GcRuns(storage, settings.gc_watch_seconds)
    known = Known(storage, deletes_enabled=settings.delete_enabled, trusted_since=gc_runs.trusted_since)
    records = LocationRecords(storage, settings.share_min_bytes)
    blobs = Blobs(
        storage, uploads, indexes, known, records, in_background=settings.publish_in_background, gc_runs=gc_runs
    )
    policy = open_policy(settings.policy)
    return Registry(
        settings=settings,
        storage=storage,
        uploads=uploads,
        indexes=indexes,
        known=known,
        records=records,
        blobs=blobs,
        manifests=Manifests(
            storage,
            indexes,
            known,
            blobs.publishing,
            settings.max_manifest_descriptors,
            sparse=settings.sparse_manifests,
            policy=policy,
            gc_runs=gc_runs,
            urls_allowed=settings.manifest_urls_allow,
        ),
        client_sessions=ClientSessions(uploads, settings.max_sessions_per_client),
        page=CatalogPage(storage),
        policy=policy,
        gc_runs=gc_runs,
    )
