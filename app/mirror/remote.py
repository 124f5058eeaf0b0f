"""A registry as a source: `docker://HOST/NAME:TAG` or `docker://HOST/NAME@DIGEST`, read over the distribution API.

Authentication is whatever the registry asks for in its `WWW-Authenticate` challenge: none, Basic, or the docker
token flow (a token for `repository:NAME:pull` from the realm, fetched with the credentials when there are any).
Credentials come from `--src-creds USER:PASS`, else from `~/.docker/config.json` (`auths.<host>.auth`).
Loopback registries are spoken to over plain HTTP, every other one over HTTPS.

Upstream throttling (429) and server errors (5xx), and connections that fail before an answer, are retried with
exponential backoff, waiting what `Retry-After` asks when it is given. Written here rather than with a retry
library: the one policy needs the response (its status and `Retry-After`), and it is a dozen lines.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import os
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx

from app.layout import OCI_INDEX
from app.mirror.source import MANIFEST_ACCEPT, STREAM_CHUNK, Fetched, SourceError, checked
from app.registry.references import DIGEST_RE, NAME_RE, TAG_RE

RETRIED_STATUSES = {429, 500, 502, 503, 504}
MAX_RETRY_AFTER_S = 300.0
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
DOCKER_HUB_NAMES = {DOCKER_HUB, DOCKER_HUB_API, "index.docker.io"}
DOCKER_HUB_AUTH_KEY = "https://index.docker.io/v1/"
CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


@dataclass(frozen=True)
class RemoteOptions:
    credentials: tuple[str, str] | None = None  # --src-creds; None: ~/.docker/config.json, else anonymous
    tls_verify: bool = True
    attempts: int = 6
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0


@dataclass(frozen=True)
class RemoteReference:
    host: str  # as the user wrote it (docker.io for Docker Hub)
    name: str
    reference: str | None  # tag or digest

    @property
    def api_host(self) -> str:
        return DOCKER_HUB_API if self.host == DOCKER_HUB else self.host


def parse_remote(location: str) -> RemoteReference:
    """`HOST/NAME[:TAG|@DIGEST]`; without a host (no `.` or `:` in the first component) it is Docker Hub."""
    rest, _, digest = location.partition("@")
    head, _, last = rest.rpartition("/")
    tag = None
    if ":" in last:
        last, _, tag = last.partition(":")
    path = f"{head}/{last}" if head else last
    first, _, remainder = path.partition("/")
    if remainder and ("." in first or ":" in first or first == "localhost"):
        host, name = first, remainder
    else:
        host, name = DOCKER_HUB, path
    if host == DOCKER_HUB and "/" not in name:
        name = f"library/{name}"
    if not NAME_RE.fullmatch(name):
        raise SourceError(f"invalid repository name {name!r} in docker://{location}")
    reference = digest or tag
    if reference is not None and not (DIGEST_RE.fullmatch(reference) or TAG_RE.fullmatch(reference)):
        raise SourceError(f"invalid tag or digest {reference!r} in docker://{location}")
    return RemoteReference(host, name, reference)


def is_loopback(host: str) -> bool:
    hostname = host.rsplit(":", 1)[0] if host.count(":") == 1 or host.startswith("[") else host
    hostname = hostname.strip("[]")
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def docker_config_credentials(host: str) -> tuple[str, str] | None:
    """`auths.<host>.auth` of the docker client's config (`$DOCKER_CONFIG/config.json`); no credential helpers."""
    directory = Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker")
    try:
        auths = json.loads((directory / "config.json").read_text()).get("auths") or {}
    except (OSError, ValueError, AttributeError):
        return None
    keys = [host, f"https://{host}", f"http://{host}"]
    if host in DOCKER_HUB_NAMES:
        keys = [DOCKER_HUB_AUTH_KEY, *keys]
    for key in keys:
        encoded = (auths.get(key) or {}).get("auth")
        if encoded:
            user, _, password = base64.b64decode(encoded).decode("utf-8", "replace").partition(":")
            return user, password
    return None


def retry_delay(response: httpx.Response | None, attempt: int, options: RemoteOptions) -> float:
    """What `Retry-After` asks (seconds or an HTTP date), else exponential backoff."""
    header = response.headers.get("Retry-After") if response is not None else None
    if header:
        if header.strip().isdigit():
            return min(float(header), MAX_RETRY_AFTER_S)
        try:
            when = parsedate_to_datetime(header)
            return min(max(0.0, when.timestamp() - time.time()), MAX_RETRY_AFTER_S)
        except (TypeError, ValueError):
            pass
    return min(options.backoff_s * 2**attempt, options.max_backoff_s)


class RemoteRegistry:
    """One repository of a registry, read with a shared connection pool."""

    def __init__(self, location: str, options: RemoteOptions) -> None:
        self.ref = parse_remote(location)
        self.options = options
        self.credentials = options.credentials or docker_config_credentials(self.ref.host)
        scheme = "http" if is_loopback(self.ref.api_host) else "https"
        self.base = f"{scheme}://{self.ref.api_host}/v2/{self.ref.name}/"
        timeout = httpx.Timeout(60.0, connect=15.0)
        self.http = httpx.AsyncClient(verify=options.tls_verify, timeout=timeout, follow_redirects=True)
        self._authorization: str | None = None
        self._auth_lock = asyncio.Lock()

    def describe(self) -> str:
        return f"docker://{self.ref.host}/{self.ref.name}" + (f":{self.ref.reference}" if self.ref.reference else "")

    def default_reference(self) -> str | None:
        return self.ref.reference or "latest"

    async def aclose(self) -> None:
        await self.http.aclose()

    # requests ---------------------------------------------------------------------------------------------

    async def _send(self, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
        """GET `path` (relative to the repository), authenticated and retried; the caller closes the response."""
        url = urljoin(self.base, path)
        answered_challenge = False
        for attempt in range(self.options.attempts):
            request_headers = dict(headers or {})
            if self._authorization:
                request_headers["Authorization"] = self._authorization
            try:
                request = self.http.build_request("GET", url, headers=request_headers)
                response = await self.http.send(request, stream=True)
            except httpx.TransportError as exc:
                if attempt + 1 == self.options.attempts:
                    raise SourceError(f"{self.ref.api_host} unreachable: {exc}") from exc
                await asyncio.sleep(retry_delay(None, attempt, self.options))
                continue
            if response.status_code == 401 and not answered_challenge:
                await response.aclose()
                await self._authenticate(response.headers.get("WWW-Authenticate", ""))
                answered_challenge = True
                continue
            if response.status_code in RETRIED_STATUSES and attempt + 1 < self.options.attempts:
                await response.aclose()
                await asyncio.sleep(retry_delay(response, attempt, self.options))
                continue
            return response
        raise SourceError(f"{url}: still failing after {self.options.attempts} attempts")

    async def _authenticate(self, challenge: str) -> None:
        """Answer a 401's challenge: Basic credentials, or a bearer token from the realm."""
        scheme, _, params_text = challenge.partition(" ")
        params = dict(CHALLENGE_PARAM.findall(params_text))
        async with self._auth_lock:
            if scheme.lower() == "basic":
                if self.credentials is None:
                    raise SourceError(f"{self.ref.host} needs credentials: --src-creds USER:PASS or docker login")
                self._authorization = "Basic " + base64.b64encode(":".join(self.credentials).encode()).decode()
            elif scheme.lower() == "bearer" and params.get("realm"):
                self._authorization = "Bearer " + await self._token(params)
            else:
                raise SourceError(f"{self.ref.host} asked for unsupported authentication {challenge[:100]!r}")

    async def _token(self, params: dict[str, str]) -> str:
        query = {"scope": f"repository:{self.ref.name}:pull"}
        if params.get("service"):
            query["service"] = params["service"]
        auth = httpx.BasicAuth(*self.credentials) if self.credentials else None
        try:
            response = await self.http.get(params["realm"], params=query, auth=auth)
        except httpx.HTTPError as exc:
            raise SourceError(f"token service {params['realm']} unreachable: {exc}") from exc
        if response.status_code != 200:
            raise SourceError(f"token service {params['realm']} refused ({response.status_code}): check credentials")
        try:
            document = response.json()
            token = document.get("token") or document.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str):
            raise SourceError(f"token service {params['realm']} answered no token")
        return token

    async def _read(self, path: str, headers: dict[str, str], what: str) -> httpx.Response | None:
        """A small document (manifest, index, list), read whole; None on 404."""
        response = await self._send(path, headers)
        try:
            if response.status_code == 404:
                return None
            self._raise_for(response, what)
            if int(response.headers.get("Content-Length") or 0) > MAX_MANIFEST_BYTES:
                raise SourceError(f"{what} is larger than {MAX_MANIFEST_BYTES} bytes")
            await response.aread()
            return response
        finally:
            await response.aclose()

    def _raise_for(self, response: httpx.Response, what: str) -> None:
        if response.status_code in (401, 403):
            raise SourceError(f"{self.describe()}: access to {what} denied ({response.status_code})")
        if response.status_code >= 400:
            raise SourceError(f"{self.describe()}: {what} answered {response.status_code}")

    # the source interface ---------------------------------------------------------------------------------

    async def manifest(self, reference: str, media_type: str | None = None) -> Fetched:
        response = await self._read(f"manifests/{reference}", {"Accept": MANIFEST_ACCEPT}, f"manifest {reference}")
        if response is None:
            raise SourceError(f"{self.describe()}: manifest {reference} not found")
        served = response.headers.get("Docker-Content-Digest") or ""
        expected = reference if DIGEST_RE.fullmatch(reference) else served if DIGEST_RE.fullmatch(served) else None
        content_type = response.headers.get("Content-Type", "").split(";")[0].strip() or media_type
        return checked(response.content, content_type, expected)

    @asynccontextmanager
    async def blob(self, digest: str) -> AsyncIterator[AsyncIterator[bytes]]:
        response = await self._send(f"blobs/{digest}")
        try:
            if response.status_code == 404:
                raise SourceError(f"{self.describe()}: blob {digest} not found")
            self._raise_for(response, f"blob {digest}")
            yield response.aiter_bytes(STREAM_CHUNK)
        except httpx.HTTPError as exc:
            raise SourceError(f"{self.describe()}: blob {digest} interrupted: {exc}") from exc
        finally:
            await response.aclose()

    async def referrers(self, digest: str) -> list[dict[str, Any]]:
        """The referrers API, else the tag schema (`sha256-<hex>`, an index of referrers) of older registries."""
        accept = {"Accept": OCI_INDEX}
        response = await self._read(f"referrers/{digest}", accept, f"referrers of {digest}")
        if response is None or not response.headers.get("Content-Type", "").startswith(OCI_INDEX):
            response = await self._read(f"manifests/{digest.replace(':', '-', 1)}", accept, f"referrers of {digest}")
        if response is None:
            return []
        try:
            manifests = json.loads(response.content).get("manifests") or []
        except (ValueError, AttributeError) as exc:
            raise SourceError(f"{self.describe()}: the referrers of {digest} are not an index") from exc
        return [entry for entry in manifests if isinstance(entry, dict)]

    async def tags(self) -> list[str]:
        tags: list[str] = []
        path: str | None = "tags/list?n=1000"
        while path:
            response = await self._read(path, {}, "the tags list")
            if response is None:
                raise SourceError(f"{self.describe()}: repository not found")
            try:
                tags += json.loads(response.content).get("tags") or []
            except (ValueError, AttributeError, TypeError) as exc:
                raise SourceError(f"{self.describe()}: the tags list is not JSON") from exc
            following = response.links.get("next", {}).get("url")
            path = urljoin(str(response.url), following) if following else None
        return tags
