"""Registry logic that knows nothing of HTTP: upload sessions, blobs, manifests, and the derived indexes."""

from __future__ import annotations

from dataclasses import dataclass

from app.registry.blobs import Blobs
from app.registry.catalog_page import CatalogPage
from app.registry.client_sessions import ClientSessions
from app.registry.gc_runs import GcRuns
from app.registry.indexes import Indexes
from app.registry.manifests import Manifests
from app.registry.parts import PartSender
from app.registry.policy import PolicyFile, open_policy
from app.registry.uploads import Uploads
from app.settings import Settings
from app.storage import Storage, open_storage
from app.storage.base import MultipartStorage


@dataclass
class Registry:
    settings: Settings
    storage: Storage
    uploads: Uploads
    indexes: Indexes
    blobs: Blobs
    manifests: Manifests
    client_sessions: ClientSessions
    page: CatalogPage
    policy: PolicyFile
    gc_runs: GcRuns


def open_uploads(settings: Settings, storage: Storage | None, *, create: bool = True) -> Uploads:
    """The staging directory's sessions, with S3 multipart uploads overlapped when the store supports them."""
    sender = PartSender(storage) if isinstance(storage, MultipartStorage) else None
    return Uploads(settings.staging_dir, sender, create=create)


def build_registry(settings: Settings, storage: Storage | None = None) -> Registry:
    """Create every long-lived part once, at start-up."""
    storage = storage or open_storage(settings)
    uploads = open_uploads(settings, storage)
    indexes = Indexes(storage)
    policy = open_policy(settings.policy)
    gc_runs = GcRuns(storage, settings.gc_watch_seconds)
    return Registry(
        settings=settings,
        storage=storage,
        uploads=uploads,
        indexes=indexes,
        blobs=Blobs(storage, uploads, indexes, gc_runs),
        manifests=Manifests(
            storage,
            indexes,
            settings.max_manifest_descriptors,
            sparse=settings.sparse_manifests,
            policy=policy,
            gc_runs=gc_runs,
        ),
        client_sessions=ClientSessions(uploads, settings.max_sessions_per_client),
        page=CatalogPage(storage),
        policy=policy,
        gc_runs=gc_runs,
    )
