"""Progress of `copy` and `sync`: bars on a terminal (rich), plain lines otherwise, nothing with `--json`.

Progress always goes to stderr; stdout carries only the summary, so `--json` output can be piped as it is.
"""

from __future__ import annotations

import sys
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)


def short(digest: str) -> str:
    return digest.split(":", 1)[-1][:12]


class Quiet:
    """For `--json`: the summary says it all. Each reporter is the `Events` of app.mirror.copier."""

    def blob_started(self, digest: str, size: int) -> None:
        pass

    def blob_advanced(self, digest: str, count: int) -> None:
        pass

    def blob_finished(self, digest: str, how: str) -> None:
        pass

    def manifest_finished(self, name: str, digest: str, how: str) -> None:
        pass

    def close(self) -> None:
        pass


class Lines(Quiet):
    """One line per blob and manifest done: readable in CI logs, where bars would be noise."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.sizes: dict[str, int] = {}

    def blob_started(self, digest: str, size: int) -> None:
        self.sizes[digest] = size

    def blob_finished(self, digest: str, how: str) -> None:
        size = f" ({self.sizes[digest]} bytes)" if digest in self.sizes else ""
        print(f"blob {digest} {how}{size}", file=self.out, flush=True)

    def manifest_finished(self, name: str, digest: str, how: str) -> None:
        print(f"manifest {name}@{digest} {how}", file=self.out, flush=True)


class Bars(Quiet):
    """A bar per blob in flight and one for every byte uploaded so far, with rate and time left."""

    def __init__(self, out: TextIO) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=Console(file=out),
            transient=False,
        )
        self.overall = self.progress.add_task("total", total=0)
        self.tasks: dict[str, TaskID] = {}
        self.progress.start()

    def blob_started(self, digest: str, size: int) -> None:
        self.tasks[digest] = self.progress.add_task(f"blob {short(digest)}", total=size)
        total = self.progress.tasks[self.overall].total or 0
        self.progress.update(self.overall, total=total + size)

    def blob_advanced(self, digest: str, count: int) -> None:
        self.progress.advance(self.tasks[digest], count)
        self.progress.advance(self.overall, count)

    def blob_finished(self, digest: str, how: str) -> None:
        task = self.tasks.pop(digest, None)
        if task is not None:
            if how == "failed":  # the retry counts its bytes again: take this attempt's out of the total
                done = next(item for item in self.progress.tasks if item.id == task)
                overall = next(item for item in self.progress.tasks if item.id == self.overall)
                total, completed = (overall.total or 0) - (done.total or 0), overall.completed - done.completed
                self.progress.update(self.overall, total=total, completed=completed)
            self.progress.remove_task(task)
        if how != "present":
            self.progress.console.print(f"blob {short(digest)} {how}")

    def manifest_finished(self, name: str, digest: str, how: str) -> None:
        self.progress.console.print(f"manifest {name}@{short(digest)} {how}")

    def close(self) -> None:
        self.progress.stop()


Reporter = Quiet


def reporter(json_output: bool, out: TextIO = sys.stderr) -> Reporter:
    """Bars on a terminal, lines elsewhere, nothing when the summary is JSON."""
    if json_output:
        return Quiet()
    return Bars(out) if out.isatty() else Lines(out)
