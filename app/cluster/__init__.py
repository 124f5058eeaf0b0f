"""Several replicas on one bucket, each with its own staging directory: membership, ownership, forwarding."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
from fastapi import FastAPI

from app.cluster.forwarding import Forwarding
from app.cluster.members import Members
from app.lifecycle import Drain
from app.settings import Settings

MAX_PEER_CONNECTIONS = 256


def install(app: FastAPI, settings: Settings, drain: Drain) -> None:
    """With peers configured, forward what belongs to another replica (call it before the edge's middlewares:
    requests are forwarded once the edge has checked their size and pace, and learnt the client's address)."""
    if not settings.peers:
        app.state.members = None
        return
    members = Members(
        settings.advertise_url,
        settings.peers,
        settings.peer_secret,
        settings.peers_refresh_seconds,
        draining=lambda: drain.active,
    )
    limits = httpx.Limits(max_connections=MAX_PEER_CONNECTIONS, max_keepalive_connections=32)
    client = httpx.AsyncClient(limits=limits, follow_redirects=False, trust_env=False)
    app.state.members, app.state.peer_client = members, client
    app.add_middleware(Forwarding, members=members, client=client)


@contextlib.asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[None]:
    """The replica's view of its peers: one refresh before it serves, then one every refresh interval."""
    members: Members | None = app.state.members
    if members is None:
        yield
        return
    client: httpx.AsyncClient = app.state.peer_client
    registry = app.state.registry
    members.on_change = registry.beliefs.writers_changed
    registry.blobs.publishing.others = members
    await members.refresh(client)
    watching = asyncio.create_task(members.watch(client))
    try:
        yield
    finally:
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watching
        await client.aclose()
