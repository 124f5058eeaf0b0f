"""Per-client-address limits: failed logins (against password guessing) and concurrent uploads."""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

from app.errors import TooManyRequests

FAILURE_WINDOW_SECONDS = 60.0
MAX_TRACKED_ADDRESSES = 10_000
UPLOAD_RETRY_AFTER_SECONDS = "1"


class FailureLimiter:
    """At most `limit` failed logins per address in any minute; then 429 until the oldest one ages out.

    While an address is blocked its credentials are not even checked, so guessing cannot go on at bcrypt
    speed. A password check takes its slot before it starts (`reserve`) and gives it back only when it
    succeeds (`release`): checks in flight count as failures, so a burst of N concurrent logins is treated like
    N in a row and at most `limit` wrong passwords are ever checked per window. Memory is bounded: past
    `MAX_TRACKED_ADDRESSES` the quietest addresses are forgotten first.
    """

    def __init__(self, limit: int, window: float = FAILURE_WINDOW_SECONDS) -> None:
        self.limit = limit
        self.window = window
        self._failures: dict[str, deque[float]] = {}

    def check(self, address: str) -> None:
        """Raise 429 while the address has no slot left (failures and checks in flight)."""
        if not self.limit:
            return
        recent = self._recent(address)
        if len(recent) >= self.limit:
            retry_after = math.ceil(recent[0] + self.window - time.monotonic())
            raise TooManyRequests(
                "too many failed logins from this address, retry later",
                headers={"Retry-After": str(max(retry_after, 1))},
            )

    def reserve(self, address: str) -> float | None:
        """Take a slot for a password check about to run, counted as a failure until `release`d; 429 if none."""
        if not self.limit:
            return None
        self.check(address)
        return self.record(address)

    def release(self, address: str, slot: float | None) -> None:
        """The check of `slot` succeeded: it does not count against the address."""
        recent = self._failures.get(address)
        if slot is not None and recent is not None and slot in recent:
            recent.remove(slot)

    def record(self, address: str) -> float | None:
        """Count one failure now; returns its slot."""
        if not self.limit:
            return None
        recent = self._recent(address)
        now = time.monotonic()
        recent.append(now)
        self._failures.pop(address, None)
        self._failures[address] = recent  # most recently failing last: eviction takes the front
        while len(self._failures) > MAX_TRACKED_ADDRESSES:
            del self._failures[next(iter(self._failures))]
        return now

    def _recent(self, address: str) -> deque[float]:
        recent = self._failures.get(address, deque())
        cutoff = time.monotonic() - self.window
        while recent and recent[0] <= cutoff:
            recent.popleft()
        return recent


class UploadLimiter:
    """At most `limit` upload requests streaming at once from one address (0: no limit)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._active: dict[str, int] = {}

    @contextmanager
    def hold(self, address: str) -> Iterator[None]:
        if self.limit and self._active.get(address, 0) >= self.limit:
            raise TooManyRequests(
                f"more than {self.limit} concurrent uploads from this address",
                headers={"Retry-After": UPLOAD_RETRY_AFTER_SECONDS},
            )
        self._active[address] = self._active.get(address, 0) + 1
        try:
            yield
        finally:
            remaining = self._active[address] - 1
            if remaining:
                self._active[address] = remaining
            else:
                del self._active[address]
