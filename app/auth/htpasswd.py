"""Users and bcrypt password hashes from an htpasswd file, the format `htpasswd -B` writes (`user:$2y$...`).

Only bcrypt entries are accepted: the other formats htpasswd knows (MD5 `$apr1$`, SHA1 `{SHA}`, crypt, plain)
are fast to brute-force, so a file holding one stops the service at start instead of silently weakening it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from pathlib import Path

import anyio
import anyio.to_thread
import bcrypt

PASSWORD_CHECK_THREADS = 2  # bcrypt holds a core per check: two leave the rest of a small machine to the pushes
BCRYPT_RE = re.compile(r"\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}")
BCRYPT_MAX_PASSWORD = 72  # bcrypt reads no further; htpasswd truncates the same way when hashing
VERIFIED_TTL_SECONDS = 60.0


class HtpasswdError(ValueError):
    """The file cannot be used; the message names the line."""


class Htpasswd:
    """Password checks in constant time for known and unknown users alike.

    Clients that use Basic auth send the password with every request; a bcrypt check costs tens of
    milliseconds, so a successful check is remembered for a minute under a keyed hash of the credentials
    (never the password itself).
    """

    def __init__(self, users: dict[str, bytes]) -> None:
        if not users:
            raise HtpasswdError("holds no users")
        self._users = users
        cost = max(int(BCRYPT_RE.fullmatch(h.decode())[1]) for h in users.values())  # type: ignore[index]
        self._dummy = bcrypt.hashpw(secrets.token_bytes(16), bcrypt.gensalt(cost))
        self._cache_key = secrets.token_bytes(32)
        self._verified: dict[bytes, float] = {}

    @classmethod
    def load(cls, path: Path) -> Htpasswd:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise HtpasswdError(f"cannot read {path}: {exc}") from None
        return cls(parse(text))

    def recently_verified(self, username: str, password: str) -> bool:
        """Whether the pair passed `verify` within the last minute: cheap, no need for a worker thread."""
        key = self._remember_key(username, password.encode()[:BCRYPT_MAX_PASSWORD])
        return self._verified.get(key, 0.0) > time.monotonic()

    def verify(self, username: str, password: str) -> bool:
        """Whether the pair is valid; slow on purpose (bcrypt), so call it from a worker thread."""
        candidate = password.encode()[:BCRYPT_MAX_PASSWORD]
        stored = self._find(username)
        valid = bcrypt.checkpw(candidate, stored or self._dummy) and stored is not None
        if valid:
            self._forget_expired()
            self._verified[self._remember_key(username, candidate)] = time.monotonic() + VERIFIED_TTL_SECONDS
        return valid

    def _find(self, username: str) -> bytes | None:
        """The user's hash, comparing every name in constant time so the lookup reveals nothing."""
        wanted = username.encode()
        found = None
        for name, stored in self._users.items():
            if hmac.compare_digest(name.encode(), wanted):
                found = stored
        return found

    def _remember_key(self, username: str, password: bytes) -> bytes:
        return hmac.new(self._cache_key, username.encode() + b"\0" + password, hashlib.sha256).digest()

    def _forget_expired(self) -> None:
        now = time.monotonic()
        for key, until in list(self._verified.items()):
            if until <= now:
                self._verified.pop(key, None)


class PasswordChecks:
    """Runs bcrypt checks on worker threads of their own, at most `PASSWORD_CHECK_THREADS` at once.

    A burst of logins waits here, not in the worker-thread pool that storage calls share (anyio's default
    limiter), so password guessing from many addresses cannot delay pushes and pulls.
    """

    def __init__(self, threads: int = PASSWORD_CHECK_THREADS) -> None:
        self.threads = threads
        self._limiter: anyio.CapacityLimiter | None = None  # made in the event loop, on first use

    async def verify(self, htpasswd: Htpasswd, username: str, password: str) -> bool:
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.threads)
        return await anyio.to_thread.run_sync(htpasswd.verify, username, password, limiter=self._limiter)


def parse(text: str) -> dict[str, bytes]:
    users: dict[str, bytes] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, stored = line.partition(":")
        if not sep or not name:
            raise HtpasswdError(f"line {number}: expected user:hash")
        if not BCRYPT_RE.fullmatch(stored):
            raise HtpasswdError(
                f"line {number} (user {name!r}): only bcrypt hashes are accepted; create entries with `htpasswd -B`"
            )
        users[name] = stored.encode()
    return users
