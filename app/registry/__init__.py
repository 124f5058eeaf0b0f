"""Registry logic that knows nothing of HTTP: upload sessions, blobs, manifests, derived documents, beliefs.

`build_registry` creates every long-lived part once; `Registry.running()` is its lifetime, the one way every way in
(`serve`, `copy`, `sync`, tests) runs it: the gc announcement read before the first write, what the store can do
learnt, verified uploads left on the staging disk published, and while it runs the gc watch, the purge of
abandoned uploads and event delivery; at the end, writes still behind an answer are finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from anyio.to_thread import run_sync as run

from app.cluster.members import member_id
from app.events import Notifier
from app.registry.beliefs import Beliefs
from app.registry.blobs import Blobs
from app.registry.catalog_page import CatalogPage
from app.registry.client_sessions import ClientSessions
from app.registry.documents import Documents
from app.registry.events import RegistryEvents
from app.registry.gc_runs import GcRuns
from app.registry.immutable import ImmutableTags
from app.registry.limits import StagingLimits
from app.registry.location_records import LocationRecords
from app.registry.manifests import Manifests
from app.registry.parts import PartSender
from app.registry.policy import PolicyFile, open_policy
from app.registry.purging import in_background, purge_forever
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
    beliefs: Beliefs
    documents: Documents
    records: LocationRecords
    blobs: Blobs
    manifests: Manifests
    client_sessions: ClientSessions
    page: CatalogPage
    policy: PolicyFile
    gc_runs: GcRuns
    notifier: Notifier
    _warming: asyncio.Future[None] | None = field(default=None, init=False, repr=False)
    # Set once the start-up work (the gc announcement, the store's abilities, the warm-up) is over, however it went:
    # a thread-safe flag, so that a test can start counting a push's requests from a quiet store.
    started_up: threading.Event = field(default_factory=threading.Event, init=False, repr=False)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Registry]:
        """The registry's lifetime (see the module's docstring). Nothing here holds the start on the store: the gc
        watch reads the announcement at once, and whatever relies on the store first waits for that read."""
        try:
            async with (
                in_background(self._start_up()),
                in_background(self.gc_runs.watch()),
                in_background(purge_forever(self.uploads, self.settings.upload_max_age_seconds)),
            ):
                self.notifier.start()
                self.blobs.publishing.resume()
                try:
                    yield self
                finally:
                    await self.settle()
        finally:  # once the background work is over: nothing writes a presence after it is removed
            await self.gc_runs.leave()
            await self.notifier.stop()

    async def _start_up(self) -> None:
        """The gc announcement first (what is learnt before it is not believed), then the rest at once; nothing
        is written to a store that fails its check (a missing bucket stays missing: some servers would create it
        on the first write). Requests then read what they need when they need it."""
        try:
            await run(self.storage.check)
            await self.gc_runs.know()
            await asyncio.gather(self._learn_the_store(), self.warm())
        except StorageFault:
            pass
        finally:
            self.started_up.set()

    async def _learn_the_store(self) -> None:
        """Whether the store refuses a stale conditional write (app/registry/documents.py); until this is known,
        and if it cannot be learnt, documents are written the way that is correct without it."""
        with contextlib.suppress(StorageFault):
            await run(getattr, self.storage, "conditional_overwrite")

    async def warm(self) -> None:
        """At start, off any push's path, read what pushes will ask: whether `v2/index.html` is there, the
        catalog, the blob location records. Once per process: later callers wait for the first."""
        if self._warming is None:
            self._warming = asyncio.ensure_future(self._warm())
        await asyncio.shield(self._warming)

    async def _warm(self) -> None:
        try:
            await self.documents.check_index_html()
            await self.documents.load_catalog()
        except StorageFault as exc:  # the store may come back; pushes then read what they need
            log.warning("could not read the catalog at start: %s", exc)
        if self.settings.share_blobs:
            await self.records.load()

    async def settle(self) -> None:
        """Finish the writes that go on behind answers: verified blobs, blob summaries, location records, the
        checks of derived documents (before an exit)."""
        await self.blobs.publishing.drain()
        await self.blobs.summaries.settle()
        await self.records.settle()
        await self.documents.drain()


def open_uploads(settings: Settings, storage: Storage | None, *, create: bool = True, writer: str = "") -> Uploads:
    """The staging directory's sessions, with S3 multipart uploads overlapped when the store supports them;
    `writer`: the gc participant recorded as beginning them."""
    sender = PartSender(storage, writer) if isinstance(storage, MultipartStorage) else None
    limits = StagingLimits(settings.staging_dir, settings.max_blob_bytes, settings.staging_min_free_bytes)
    holder = member_id(settings.advertise_url) if settings.peers else ""  # a session's URL names its replica
    return Uploads(settings.staging_dir, sender, create=create, limits=limits, id_prefix=holder)


def build_registry(settings: Settings, storage: Storage | None = None) -> Registry:
    """Create every long-lived part once, at start-up (nothing is read or written until `running`)."""
    storage = storage or open_storage(settings)
    gc_runs = GcRuns(storage, settings.gc_watch_seconds)
    uploads = open_uploads(settings, storage, writer=gc_runs.id)
    beliefs = Beliefs(storage, uploads.staging, deletes_enabled=settings.delete_enabled, horizon=gc_runs.horizon)
    documents = Documents(storage, beliefs, uploads.staging)
    records = LocationRecords(storage, beliefs, settings.share_min_bytes)
    policy = open_policy(settings.policy)
    immutable = ImmutableTags(storage, policy)
    notifier = Notifier(settings)
    events = RegistryEvents(notifier, settings.service_url)
    blobs = Blobs(
        storage,
        uploads,
        documents,
        beliefs,
        records,
        gc_runs,
        events,
        immutable,
        in_background=settings.publish_in_background,
    )
    manifests = Manifests(
        storage,
        documents,
        beliefs,
        blobs.publishing,
        blobs.summaries,
        immutable,
        gc_runs,
        events,
        settings.max_manifest_descriptors,
        sparse=settings.sparse_manifests,
        urls_allowed=settings.manifest_urls_allow,
    )
    return Registry(
        settings=settings,
        storage=storage,
        uploads=uploads,
        beliefs=beliefs,
        documents=documents,
        records=records,
        blobs=blobs,
        manifests=manifests,
        client_sessions=ClientSessions(uploads, settings.max_sessions_per_client),
        page=CatalogPage(storage),
        policy=policy,
        gc_runs=gc_runs,
        notifier=notifier,
    )
