"""A registry as a source: `docker://HOST/NAME:TAG` or `docker://HOST/NAME@DIGEST`, read over the distribution API.

Authentication is whatever the registry asks for in its `WWW-Authenticate` challenge: none, Basic, or the docker
token flow (a token for `repository:NAME:pull` from the realm, fetched with the credentials when there are any).
Credentials come from `--src-creds USER:PASS`, else from `~/.docker/config.json` (`auths.<host>.auth`).
Loopback registries are spoken to over plain HTTP, every other one over HTTPS.

Upstream throttling (429) and server errors (5xx), and connections that fail before an answer, are retried with
exponential backoff, waiting what `Retry-After` asks when it is given (whole seconds or an HTTP date, at most
`MAX_RETRY_AFTER_S`; anything else is ignored), within a total budget of waiting per request. Written here rather
than with a retry library: the one policy needs the response (its status and `Retry-After`), and it is a dozen lines.

Nothing an upstream sends is trusted to be small: documents (manifests, indexes, referrers, token answers, pages
of the tags list) are counted while they stream, after decoding, and refused at their limit; reading one has a
deadline; the tags list is bounded in pages, tags and time. Credentials go only to the registry's own origin (a
`Link` to another host is refused; httpx drops them on a redirect elsewhere) and to the token realm it names.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import os
import re
import time
import zlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from app.layout import OCI_INDEX
from app.mirror.source import MANIFEST_ACCEPT, STREAM_CHUNK, Fetched, SourceError, checked
from app.registry.references import DIGEST_RE, NAME_RE, TAG_RE

RETRIED_STATUSES = {429, 500, 502, 503, 504}
MAX_RETRY_AFTER_S = 60.0
MAX_TOKEN_BYTES = 1024 * 1024
MAX_REFERRERS_BYTES = 4 * 1024 * 1024
MAX_TAGS_PAGE_BYTES = 16 * 1024 * 1024  # a registry that ignores `n` sends every tag at once
RETRY_AFTER_SECONDS = re.compile(r"[0-9]{1,10}")
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
    retry_budget_s: float = 120.0  # the most one request waits between its attempts, in total
    document_s: float = 120.0  # the most one document (manifest, token answer, page of tags) takes to arrive
    max_tags: int = 100_000
    max_tag_pages: int = 1_000
    tag_list_s: float = 300.0


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


def retry_after(response: httpx.Response | None) -> float | None:
    """What `Retry-After` asks, in seconds: ASCII digits or an HTTP date (RFC 9110), else None."""
    header = (response.headers.get("Retry-After") or "").strip() if response is not None else ""
    if RETRY_AFTER_SECONDS.fullmatch(header):
        return float(header)
    if not header.isascii():
        return None
    try:
        when = parsedate_to_datetime(header)
        return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def retry_delay(response: httpx.Response | None, attempt: int, options: RemoteOptions) -> float:
    """What `Retry-After` asks, capped at `MAX_RETRY_AFTER_S`, else exponential backoff."""
    asked = retry_after(response)
    if asked is not None:
        return min(asked, MAX_RETRY_AFTER_S)
    return min(options.backoff_s * 2**attempt, options.max_backoff_s)


def same_origin(url: str, other: str) -> bool:
    first, second = urlsplit(url), urlsplit(other)
    return (first.scheme, first.netloc.lower()) == (second.scheme, second.netloc.lower())


async def read_bounded(response: httpx.Response, limit: int, what: str) -> bytes:
    """The body, decoded, refused as soon as it passes `limit` bytes: a small gzip answer inflating to gigabytes
    is stopped at the limit, never inflated whole."""
    decode = _decoder(response.headers.get("Content-Encoding", ""), what)
    body = bytearray()
    async for raw in response.aiter_raw():
        body += decode(raw, limit + 1 - len(body))
        if len(body) > limit:
            raise SourceError(f"{what} is larger than {limit} bytes")
    return bytes(body)


def _decoder(encoding: str, what: str) -> Callable[[bytes, int], bytes]:
    """A function (raw chunk, most bytes wanted) -> decoded bytes, for identity, gzip or deflate."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return lambda raw, _wanted: raw
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise SourceError(f"{what} came with an unsupported Content-Encoding {encoding[:50]!r}")
    inflater = zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib, told from the header

    def decode(raw: bytes, wanted: int) -> bytes:
        try:
            return inflater.decompress(raw, max(wanted, 1))
        except zlib.error as exc:
            raise SourceError(f"{what} is not valid {encoding}: {exc}") from None

    return decode


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
        try:
            url = urljoin(self.base, path)
            elsewhere = not same_origin(url, self.base)
        except ValueError as exc:  # `http://[::1` from a Link header
            raise SourceError(f"{self.describe()}: not a URL: {path[:200]!r}") from exc
        if elsewhere:
            raise SourceError(f"{self.describe()}: refused to follow a link to another host ({url[:200]})")
        answered_challenge = False
        waited = 0.0
        for attempt in range(self.options.attempts):
            request_headers = dict(headers or {})
            if self._authorization:
                request_headers["Authorization"] = self._authorization
            try:
                request = self.http.build_request("GET", url, headers=request_headers)
                async with asyncio.timeout(self.options.document_s):  # an answer whose head never ends
                    response = await self.http.send(request, stream=True)
            except (httpx.TransportError, TimeoutError) as exc:
                if attempt + 1 == self.options.attempts:
                    raise SourceError(f"{self.ref.api_host} unreachable: {exc or 'no answer in time'}") from exc
                waited = await self._wait(None, attempt, waited, url)
                continue
            except (httpx.HTTPError, httpx.InvalidURL) as exc:  # too many redirects, a redirect to another scheme
                raise SourceError(f"{url[:200]}: {exc}") from exc
            if response.status_code == 401 and not answered_challenge:
                await response.aclose()
                await self._authenticate(response.headers.get("WWW-Authenticate", ""))
                answered_challenge = True
                continue
            if response.status_code in RETRIED_STATUSES and attempt + 1 < self.options.attempts:
                await response.aclose()
                waited = await self._wait(response, attempt, waited, url)
                continue
            return response
        raise SourceError(f"{url}: still failing after {self.options.attempts} attempts")

    async def _wait(self, response: httpx.Response | None, attempt: int, waited: float, url: str) -> float:
        """Sleep before the next attempt; past the request's retry budget, give up instead."""
        delay = retry_delay(response, attempt, self.options)
        if waited + delay > self.options.retry_budget_s:
            status = f"answered {response.status_code}" if response is not None else "unreachable"
            raise SourceError(f"{url[:200]}: {status}, still after {waited:.0f} s of retries")
        await asyncio.sleep(delay)
        return waited + delay

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
        realm = params["realm"]
        if not realm.startswith("https://") and not (realm.startswith("http://") and self.base.startswith("http:")):
            raise SourceError(f"{self.ref.host} names a token service that is not https: {realm[:200]!r}")
        query = {"scope": f"repository:{self.ref.name}:pull"}
        if params.get("service"):
            query["service"] = params["service"]
        auth = httpx.BasicAuth(*self.credentials) if self.credentials else None
        try:
            async with asyncio.timeout(self.options.document_s):
                request = self.http.build_request("GET", realm, params=query)
                response = await self.http.send(request, auth=auth, stream=True)
                try:
                    if response.status_code != 200:
                        raise SourceError(f"token service {realm} refused ({response.status_code}): check credentials")
                    body = await read_bounded(response, MAX_TOKEN_BYTES, f"the answer of token service {realm}")
                finally:
                    await response.aclose()
        except (httpx.HTTPError, TimeoutError) as exc:
            raise SourceError(f"token service {realm} unreachable: {exc or 'no answer in time'}") from exc
        try:
            document = json.loads(body)
            token = document.get("token") or document.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str):
            raise SourceError(f"token service {realm} answered no token")
        return token

    async def _read(self, path: str, headers: dict[str, str], what: str, limit: int) -> Document | None:
        """A small document (manifest, index, page of tags), read whole within `limit` bytes and the deadline;
        None on 404."""
        response = await self._send(path, {**headers, "Accept-Encoding": "gzip, deflate"})
        try:
            if response.status_code == 404:
                return None
            self._raise_for(response, what)
            async with asyncio.timeout(self.options.document_s):
                return Document(await read_bounded(response, limit, what), response)
        except httpx.HTTPError as exc:
            raise SourceError(f"{self.describe()}: {what} interrupted: {exc}") from exc
        except TimeoutError as exc:
            raise SourceError(f"{self.describe()}: {what} took more than {self.options.document_s:.0f} s") from exc
        finally:
            await response.aclose()

    def _raise_for(self, response: httpx.Response, what: str) -> None:
        if response.status_code in (401, 403):
            raise SourceError(f"{self.describe()}: access to {what} denied ({response.status_code})")
        if response.status_code >= 400:
            raise SourceError(f"{self.describe()}: {what} answered {response.status_code}")

    # the source interface ---------------------------------------------------------------------------------

    async def manifest(self, reference: str, media_type: str | None = None, *, limit: int) -> Fetched:
        found = await self._read(f"manifests/{reference}", {"Accept": MANIFEST_ACCEPT}, f"manifest {reference}", limit)
        if found is None:
            raise SourceError(f"{self.describe()}: manifest {reference} not found")
        served = found.response.headers.get("Docker-Content-Digest") or ""
        expected = reference if DIGEST_RE.fullmatch(reference) else served if DIGEST_RE.fullmatch(served) else None
        content_type = found.response.headers.get("Content-Type", "").split(";")[0].strip() or media_type
        return checked(found.body, content_type, expected)

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
        what = f"referrers of {digest}"
        found = await self._read(f"referrers/{digest}", accept, what, MAX_REFERRERS_BYTES)
        if found is None or not found.response.headers.get("Content-Type", "").startswith(OCI_INDEX):
            fallback = f"manifests/{digest.replace(':', '-', 1)}"
            found = await self._read(fallback, accept, what, MAX_REFERRERS_BYTES)
        if found is None:
            return []
        try:
            manifests = json.loads(found.body).get("manifests") or []
        except (ValueError, AttributeError) as exc:
            raise SourceError(f"{self.describe()}: the referrers of {digest} are not an index") from exc
        if not isinstance(manifests, list):
            raise SourceError(f"{self.describe()}: the referrers of {digest} are not an index")
        return [entry for entry in manifests if isinstance(entry, dict)]

    async def tags(self) -> list[str]:
        """Every tag, page after page, within the bounds of `RemoteOptions` (pages, tags, time); values that are no
        strings are left out (`app.mirror.sync` selects only valid tags among the rest)."""
        try:
            async with asyncio.timeout(self.options.tag_list_s):
                return await self._all_tags()
        except TimeoutError as exc:
            raise SourceError(
                f"{self.describe()}: the tags list took more than {self.options.tag_list_s:.0f} s"
            ) from exc

    async def _all_tags(self) -> list[str]:
        tags: list[str] = []
        path: str | None = "tags/list?n=1000"
        for _page in range(self.options.max_tag_pages):
            found = await self._read(path, {}, "the tags list", MAX_TAGS_PAGE_BYTES)
            if found is None:
                raise SourceError(f"{self.describe()}: repository not found")
            try:
                page = json.loads(found.body).get("tags") or []
            except (ValueError, AttributeError) as exc:
                raise SourceError(f"{self.describe()}: the tags list is not JSON") from exc
            if not isinstance(page, list):
                raise SourceError(f"{self.describe()}: the tags list holds no list of tags")
            tags += [tag for tag in page if isinstance(tag, str)]
            if len(tags) > self.options.max_tags:
                raise SourceError(f"{self.describe()}: more than {self.options.max_tags} tags")
            following = found.response.links.get("next", {}).get("url")
            if not following:
                return tags
            try:
                path = urljoin(str(found.response.url), following)
            except ValueError as exc:
                raise SourceError(f"{self.describe()}: the tags list links to no URL: {following[:200]!r}") from exc
        raise SourceError(f"{self.describe()}: the tags list goes on past {self.options.max_tag_pages} pages")


@dataclass(frozen=True)
class Document:
    """A small answer read whole: its body, and the (closed) response for its headers, URL and links."""

    body: bytes
    response: httpx.Response
