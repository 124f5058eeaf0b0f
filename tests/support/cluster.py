"""Several replicas on one bucket, each with its own staging directory, that know each other as peers.

Ports are chosen first, so every replica's `REGISTRY_PEERS` lists all of them, those not started yet included:
a listed replica that does not answer is not a member until it does (what a static peer list gives an operator).
A replica can join later (`start`), drain and leave (`leave`), or stop at once (`stop`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI

from app.main import create_app
from app.settings import Settings
from tests.support.registry_server import serving
from tests.support.tools import free_port

PEER_SECRET = "peer-secret-for-the-tests"
REFRESH_SECONDS = 0.5


@dataclass
class Replica:
    url: str
    app: FastAPI | None = None
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    @property
    def address(self) -> str:
        return self.url.removeprefix("http://")

    @property
    def running(self) -> bool:
        return self.app is not None


class Cluster:
    """`size` replica slots; `settings_for(index, peer settings)` gives each its settings (its own staging)."""

    def __init__(self, size: int, settings_for: Callable[[int, dict[str, object]], Settings]) -> None:
        self.replicas = [Replica(f"http://127.0.0.1:{free_port()}") for _ in range(size)]
        self.settings_for = settings_for
        self.peers = ",".join(replica.url for replica in self.replicas)

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for index, replica in enumerate(self.replicas):
            if replica.running:
                self.stop(index)

    @property
    def urls(self) -> list[str]:
        return [replica.url for replica in self.replicas if replica.running]

    def start(self, index: int) -> Replica:
        replica = self.replicas[index]
        peering = {
            "peers": self.peers,
            "advertise_url": replica.url,
            "peer_secret": PEER_SECRET,
            "peers_refresh_seconds": REFRESH_SECONDS,
        }
        settings = self.settings_for(index, peering)
        replica.app = create_app(settings)
        replica.stack.enter_context(serving(replica.app, settings, int(replica.url.rsplit(":", 1)[1])))
        return replica

    def start_all(self, count: int | None = None) -> None:
        for index in range(count or len(self.replicas)):
            self.start(index)
        self.wait_until_members_agree()

    def wait_until_members_agree(self, timeout: float = 10.0) -> None:
        """Until every running replica counts exactly the running, undrained ones as ready."""
        deadline = time.monotonic() + timeout
        while True:
            expected = sorted(r.url for r in self.replicas if r.running and not r.app.state.drain.active)  # type: ignore[union-attr]
            views = [sorted(r.app.state.members.ready()) for r in self.replicas if r.running]  # type: ignore[union-attr]
            if all(view == expected for view in views):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"replicas disagree on who is ready: {views}, expected {expected}")
            time.sleep(0.05)

    def leave(self, index: int, drain_seconds: float = 2 * REFRESH_SECONDS + 1.0) -> None:
        """Drain (peers stop sending it new work, its sessions run on), then stop: a rolling update's step."""
        replica = self.replicas[index]
        assert replica.app is not None
        replica.app.state.drain.start()
        time.sleep(drain_seconds)
        self.stop(index)

    def stop(self, index: int) -> None:
        replica = self.replicas[index]
        replica.stack.close()
        replica.app = None


def staging_of(root: Path, index: int) -> Path:
    return root / f"staging-{index}"
