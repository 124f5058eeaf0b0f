"""`fsck --blobs`: read every blob object of the store and hash it again, in bounded memory.

Each repository keeps its own object per blob (`v2/<name>/blobs/<digest>`, a server-side copy when shared), so
each is read: a copy can be damaged alone. A few are read at once, each streamed chunk by chunk into its hash,
so memory stays at a few chunks whatever the blob sizes. On Storj every byte read is egress, billed as such.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from app import layout
from app.registry.references import ALGORITHMS, algorithm_of
from app.storage import Storage
from app.tools.inventory import Inventory
from app.tools.inventory import Progress as Lines

READ_THREADS = 4


@dataclass(frozen=True)
class BlobTarget:
    name: str
    digest: str
    size: int  # as listed

    @property
    def key(self) -> str:
        return layout.blob(self.name, self.digest)


@dataclass(frozen=True)
class BlobRead:
    """What a blob object holds: how many bytes, and what they hash to."""

    target: BlobTarget
    size: int
    digest: str

    @property
    def intact(self) -> bool:
        return self.digest == self.target.digest


def blob_targets(storage: Storage, inventory: Inventory) -> list[BlobTarget]:
    """Every blob object with its size: one listing per repository, in the order fsck walks them."""
    targets = []
    for repository in inventory.sorted_repositories():
        sizes = dict(storage.list_children_sized(layout.blobs_dir(repository.name)))
        targets += [BlobTarget(repository.name, digest, sizes.get(digest, 0)) for digest in sorted(repository.blobs)]
    return targets


def read_blob(storage: Storage, target: BlobTarget, advance: Callable[[int], None]) -> BlobRead | None:
    """Stream one blob through its digest's hash; None when it vanished since the listing."""
    hasher = ALGORITHMS[algorithm_of(target.digest)]()
    size = 0
    try:
        for chunk in storage.read(target.key):
            hasher.update(chunk)
            size += len(chunk)
            advance(len(chunk))
    except KeyError:
        return None
    return BlobRead(target, size, f"{algorithm_of(target.digest)}:{hasher.hexdigest()}")


def read_blobs(storage: Storage, targets: list[BlobTarget], meter: Meter) -> Iterator[BlobRead]:
    """Each target read (a few at once), in order; the meter sees every byte."""
    with ThreadPoolExecutor(max_workers=READ_THREADS) as pool:
        reads = pool.map(lambda target: read_blob(storage, target, meter.advance), targets)
        for done, found in enumerate(reads, start=1):
            meter.blob_done(done)
            if found is not None:
                yield found


class Meter:
    """Lines on stderr: a count every so many blobs (CI logs, redirected output)."""

    def __init__(self, tool: str, total_blobs: int, total_bytes: int, stream: TextIO | None = None) -> None:
        self.lines = Lines(tool, stream)
        self.total_blobs = total_blobs
        self.total_bytes = total_bytes

    def advance(self, count: int) -> None:
        pass

    def blob_done(self, done: int) -> None:
        self.lines.tick(done, "blobs read", self.total_blobs)

    def close(self) -> None:
        pass


class Bar(Meter):
    """A progress bar over every byte to read, with rate and time left (a terminal)."""

    def __init__(self, tool: str, total_blobs: int, total_bytes: int, stream: TextIO) -> None:
        super().__init__(tool, total_blobs, total_bytes, stream)
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=Console(file=stream),
        )
        self.task = self.progress.add_task(f"{tool}: reading {total_blobs} blobs", total=total_bytes)
        self.progress.start()

    def advance(self, count: int) -> None:
        self.progress.advance(self.task, count)

    def blob_done(self, done: int) -> None:
        pass

    def close(self) -> None:
        self.progress.stop()


def meter_for(tool: str, targets: list[BlobTarget], stream: TextIO | None = None) -> Meter:
    stream = stream or sys.stderr
    total = sum(target.size for target in targets)
    return Bar(tool, len(targets), total, stream) if stream.isatty() else Meter(tool, len(targets), total, stream)
