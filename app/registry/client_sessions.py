"""Which open upload sessions each client address started: no address holds more than a set number.

A session costs a staging directory and a running hash, and nothing obliges a client to finish or cancel it (the
purge takes it after `REGISTRY_UPLOAD_MAX_AGE_SECONDS`). Past the limit, starting one more session drops the
client's own least recently touched idle session (an abandoned one, most likely: clients upload a handful of
layers at once), so a client that forgets its sessions is never locked out; only when every one of its sessions
has a request in progress is the new one refused (429). Kept in memory, per process: after a restart the
sessions already on disk count again only once the purge has taken them or they finish.
"""

from __future__ import annotations

import contextlib
import logging

from app.errors import BlobUploadUnknown, TooManyRequests
from app.registry.uploads import Upload, Uploads

RETRY_AFTER_SECONDS = "5"
SWEEP_EVERY = 1024  # admissions between sweeps of every client's finished sessions (keeps memory bounded)
log = logging.getLogger("storj_registry")


class ClientSessions:
    def __init__(self, uploads: Uploads, limit: int) -> None:
        self.uploads = uploads
        self.limit = limit
        self._by_client: dict[str, dict[str, Upload]] = {}
        self._admitted = 0

    async def open(self, name: str, client: str) -> Upload:
        """A new session of repository `name` for `client`, within the client's limit (see the module doc).

        The new session and its victims are counted before anything is awaited, so a burst of starts from one
        client ends exactly like the same starts one after another.
        """
        upload = self.uploads.create(name)
        if not self.limit:
            return upload
        sessions = self._sessions_of(client)
        sessions[upload.id] = upload
        excess = len(sessions) - self.limit
        victims = self._idlest(sessions, excess, keep=upload.id) if excess > 0 else []
        for victim in victims:
            del sessions[victim.id]
        if len(victims) < excess:
            del sessions[upload.id]
            await self.uploads.discard(upload)
            raise TooManyRequests(
                f"{self.limit} upload sessions from this address are all in progress; finish or cancel one",
                headers={"Retry-After": RETRY_AFTER_SECONDS},
            )
        for victim in victims:
            log.info("upload session %s dropped: its client %s opened more than %d", victim.id, client, self.limit)
            with contextlib.suppress(BlobUploadUnknown):  # under its lock: a request may have just started on it
                await self.uploads.cancel(victim)
        return upload

    def _sessions_of(self, client: str) -> dict[str, Upload]:
        """The client's sessions still on disk (finished and cancelled ones forgotten), sweeping all now and then."""
        self._admitted += 1
        if self._admitted % SWEEP_EVERY == 0:
            for address in list(self._by_client):
                self._prune(address)
        self._prune(client)
        return self._by_client.setdefault(client, {})

    def _prune(self, client: str) -> None:
        sessions = self._by_client.get(client, {})
        for upload_id, upload in list(sessions.items()):
            if not upload.data.exists():
                del sessions[upload_id]
        if not sessions:
            self._by_client.pop(client, None)

    def _idlest(self, sessions: dict[str, Upload], count: int, keep: str) -> list[Upload]:
        """Up to `count` sessions without a request in progress, least recently touched first."""
        idle = [s for s in sessions.values() if s.id != keep and not self.uploads.busy(s)]
        return sorted(idle, key=_touched)[:count]


def _touched(upload: Upload) -> float:
    try:
        return upload.data.stat().st_mtime
    except FileNotFoundError:
        return 0.0
