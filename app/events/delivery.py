"""Delivery to one endpoint: a bounded queue, one sender task, timeouts, retries with backoff, never a wait for pushes.

`offer` is all a request does: append to the queue (or drop and count, when it is full) and wake the sender.
The sender posts the oldest events in order, up to `BATCH` per envelope, and takes them off the queue only once
the receiver answered 2xx or 3xx, so an event is delivered at least once, and in order. A failed try is counted
and retried after a backoff that doubles up to the endpoint's `max_backoff_seconds`. While idle it picks up
events that stopped processes left on the staging volume (app.events.spool).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
from collections import deque
from fnmatch import fnmatchcase

import httpx

from app.events.envelope import MEDIA_TYPE, Event, envelope
from app.events.spool import Spool
from app.metrics import EVENTS_DROPPED, EVENTS_FAILURES, EVENTS_PENDING, EVENTS_SENT
from app.settings import EventEndpoint

BATCH = 100
FIRST_BACKOFF_SECONDS = 0.25
SPOOL_POLL_SECONDS = 30.0
SIGNATURE_HEADER = "X-Registry-Signature-256"

log = logging.getLogger("storj_registry.events")


class DeliveryFailed(Exception):
    """The receiver did not take the envelope; the message says why."""


def signature(secret: str, body: bytes) -> str:
    """`sha256=<hex>`: HMAC-SHA256 of the exact body bytes, keyed with the endpoint's shared secret."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class EndpointQueue:
    def __init__(self, config: EventEndpoint, spool: Spool) -> None:
        self.config = config
        self.spool = spool
        self.queue: deque[Event] = deque()
        self.wake = asyncio.Event()
        self.failing = False
        self.task: asyncio.Task[None] | None = None

    def wants(self, event: Event) -> bool:
        return any(fnmatchcase(event.kind, pattern) for pattern in self.config.events) and any(
            fnmatchcase(event.repository, pattern) for pattern in self.config.repositories
        )

    def offer(self, events: list[Event]) -> None:
        """Queue what fits (in order) and drop the rest, counted; never blocks."""
        room = self.config.max_pending - len(self.queue)
        kept = events[: max(room, 0)]
        self.queue.extend(kept)
        if dropped := len(events) - len(kept):
            EVENTS_DROPPED.labels(self.config.name).inc(dropped)
        EVENTS_PENDING.labels(self.config.name).set(len(self.queue))
        if kept:
            self.wake.set()

    def start(self) -> None:
        self.task = asyncio.create_task(self.run(), name=f"events:{self.config.name}")

    async def stop(self) -> None:
        """Stop sending; what is still queued goes to the spool for a later process."""
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        self.spool.save(self.config.name, list(self.queue))
        self.queue.clear()
        EVENTS_PENDING.labels(self.config.name).set(0)

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=self.config.timeout_seconds, follow_redirects=False) as client:
            while True:
                self.offer(self.spool.take(self.config.name))  # at start, and after every idle period
                with contextlib.suppress(TimeoutError):
                    while True:
                        await asyncio.wait_for(self.wake.wait(), SPOOL_POLL_SECONDS)
                        await self.send_all(client)
                        self.wake.clear()  # no await since the queue was seen empty: nothing came in between

    async def send_all(self, client: httpx.AsyncClient) -> None:
        backoff = 0.0
        while self.queue:
            batch = [self.queue[index] for index in range(min(BATCH, len(self.queue)))]
            try:
                await self.post(client, batch)
            except DeliveryFailed as exc:
                EVENTS_FAILURES.labels(self.config.name).inc()
                if not self.failing:
                    log.warning("events to %s not delivered, retrying with backoff: %s", self.config.name, exc)
                self.failing = True
                backoff = min(max(backoff * 2, FIRST_BACKOFF_SECONDS), self.config.max_backoff_seconds)
                await asyncio.sleep(backoff)
                continue
            if self.failing:
                log.info("events to %s delivered again", self.config.name)
            self.failing, backoff = False, 0.0
            for _ in batch:
                self.queue.popleft()
            EVENTS_SENT.labels(self.config.name).inc(len(batch))
            EVENTS_PENDING.labels(self.config.name).set(len(self.queue))

    async def post(self, client: httpx.AsyncClient, batch: list[Event]) -> None:
        body = json.dumps(envelope(batch), separators=(",", ":")).encode()
        headers = {**self.config.headers, "Content-Type": MEDIA_TYPE}
        if self.config.secret:
            headers[SIGNATURE_HEADER] = signature(self.config.secret, body)
        try:
            response = await client.post(self.config.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from None
        if response.status_code >= 400:
            raise DeliveryFailed(f"the receiver answered {response.status_code}")
