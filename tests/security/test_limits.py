"""Every per-client limit under a burst: N requests at once are treated like N in a row.

The requests go out together from one asyncio loop (one connection each), so they are all inside the service
before the first one is answered: a limit that is checked first and counted later lets such a burst through.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path

import bcrypt
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.settings import Settings
from tests.security.conftest import PASSWORDS
from tests.security.raw import RawClient, read
from tests.support.pushing import push_blob, push_image

Serve = Callable[[Settings], str]
SLOW_COST = 10  # tens of ms per check: a burst overlaps itself for sure


def slow_htpasswd(tmp_path: Path) -> Path:
    """bob and alice with their usual passwords, hashed at a cost that makes every check take a while."""
    path = tmp_path / "slow-htpasswd"
    lines = [
        f"{user}:{bcrypt.hashpw(PASSWORDS[user].encode(), bcrypt.gensalt(SLOW_COST)).decode()}" for user in PASSWORDS
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


async def burst(url: str, requests: list[tuple[str, str, tuple[str, str] | None]]) -> list[int]:
    """Send every (method, path, basic credentials) at once, each on its own connection; their statuses."""
    limits = httpx.Limits(max_connections=len(requests), max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:
        answers = await asyncio.gather(*(client.request(m, p, auth=a) for m, p, a in requests))
    return [answer.status_code for answer in answers]


@pytest.mark.parametrize("path", ["/v2/", "/auth/token?service=storj-registry"])
def test_a_burst_of_wrong_logins_checks_at_most_the_limit(
    path: str, tmp_path: Path, auth_settings: Callable[..., Settings], serve: Serve
) -> None:
    limit = 5
    settings = auth_settings(auth_htpasswd=slow_htpasswd(tmp_path), auth_max_failures=limit, auth_token_enabled=True)
    url = serve(settings)
    wrong = [("GET", path, ("bob", f"guess-{i}")) for i in range(40)]
    right = ("GET", path, ("bob", PASSWORDS["bob"]))
    statuses = asyncio.run(burst(url, [*wrong[:20], right, *wrong[20:]]))
    checked = [status for status in statuses if status != 429]
    assert len(checked) <= limit, statuses  # each 401 or 200 is one password check
    assert statuses.count(429) >= len(statuses) - limit
    # and the limit still holds afterwards: not even the right password is checked
    assert httpx.get(f"{url}{path}", auth=("bob", PASSWORDS["bob"])).status_code == 429


def test_password_checks_cannot_starve_a_pull(
    tmp_path: Path, auth_settings: Callable[..., Settings], serve: Serve
) -> None:
    """200 wrong logins (no failure limit) queue their bcrypt checks apart: a token pull is answered meanwhile."""
    settings = auth_settings(auth_htpasswd=slow_htpasswd(tmp_path), auth_max_failures=0, auth_token_enabled=True)
    url = serve(settings)
    with httpx.Client(base_url=url, auth=("alice", PASSWORDS["alice"])) as alice:
        token = alice.get("/auth/token", params={"scope": "repository:team/app:pull,push"}).json()["token"]
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as pusher:
        push_image(pusher, "team/app", "v1")

    async def scenario() -> tuple[int, int, int]:
        limits = httpx.Limits(max_connections=300, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=300) as client:
            logins = [asyncio.create_task(client.get("/v2/", auth=("bob", f"guess-{i}"))) for i in range(200)]
            await asyncio.sleep(0.5)  # the logins are in, their checks queued
            pull = await client.get("/v2/team/app/manifests/v1", headers={"Authorization": f"Bearer {token}"})
            answered = sum(task.done() for task in logins)
            await asyncio.gather(*logins)
            return pull.status_code, answered, len(logins)

    status, answered_before_the_pull, total = asyncio.run(scenario())
    assert status == 200
    assert answered_before_the_pull < total // 2, answered_before_the_pull


def wait_for_streams(url: str, count: int) -> None:
    """Until `count` upload bodies are streaming inside the service (its `registry_active_uploads` gauge)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        families = text_string_to_metric_families(httpx.get(f"{url}/metrics").text)
        if any(s.name == "registry_active_uploads" and s.value == count for f in families for s in f.samples):
            return
        time.sleep(0.05)
    raise AssertionError(f"{count} uploads never streamed at once")


def open_sessions(settings: Settings) -> set[str]:
    return {path.name for path in settings.staging_dir.iterdir()}


def test_a_burst_of_session_starts_keeps_the_clients_newest_sessions(
    auth_settings: Callable[..., Settings], serve: Serve
) -> None:
    settings = auth_settings(max_sessions_per_client=3, trusted_proxies="127.0.0.0/8")
    url = serve(settings)
    requests = [("POST", "/v2/team/app/blobs/uploads/", ("bob", PASSWORDS["bob"])) for _ in range(10)]
    assert asyncio.run(burst(url, requests)) == [202] * 10  # idle sessions of the same client make room
    assert len(open_sessions(settings)) == 3
    with httpx.Client(base_url=url, auth=("bob", PASSWORDS["bob"])) as bob:  # one after another: the same
        for _ in range(10):
            assert bob.post("/v2/team/app/blobs/uploads/").status_code == 202
        assert len(open_sessions(settings)) == 3
        other = bob.post("/v2/team/app/blobs/uploads/", headers={"X-Forwarded-For": "198.51.100.7"})
        assert other.status_code == 202  # another client's sessions are its own
        assert len(open_sessions(settings)) == 4


def test_sessions_with_requests_in_progress_are_never_dropped(
    auth_settings: Callable[..., Settings], serve: Serve
) -> None:
    settings = auth_settings(max_sessions_per_client=2)
    url = serve(settings)
    auth = {"Authorization": httpx.BasicAuth("bob", PASSWORDS["bob"])._auth_header}
    with httpx.Client(base_url=url, auth=("bob", PASSWORDS["bob"])) as bob:
        locations = [bob.post("/v2/team/app/blobs/uploads/").headers["location"] for _ in range(2)]
        streams = [
            RawClient(url).send_head("PATCH", location, {**auth, "Content-Length": "100"}) for location in locations
        ]
        for stream in streams:
            stream.send(b"half")
        wait_for_streams(url, 2)  # both PATCHes are inside the service, holding their sessions
        refused = bob.post("/v2/team/app/blobs/uploads/")
        assert refused.status_code == 429 and refused.json()["errors"][0]["code"] == "TOOMANYREQUESTS"
        for stream in streams:
            stream.send(b"x" * 96)
            assert read(stream.getresponse()).status == 202
        assert bob.post("/v2/team/app/blobs/uploads/").status_code == 202  # now an idle one makes room
        assert len(open_sessions(settings)) == 2


def test_metrics_name_no_repository(auth_settings: Callable[..., Settings], serve: Serve) -> None:
    """A blob-only private repository: the anonymous catalog refuses to list it, and /metrics does not tell either."""
    url = serve(auth_settings())
    with httpx.Client(base_url=url, auth=("alice", PASSWORDS["alice"])) as alice:
        for i in range(20):
            push_blob(alice, f"secret/hidden-{i}", b"private bytes")
    assert httpx.get(f"{url}/v2/_catalog").status_code == 401
    metrics = httpx.get(f"{url}/metrics").text
    assert "hidden" not in metrics and "secret" not in metrics


def test_a_burst_of_uploads_streams_at_most_the_limit_at_once(
    auth_settings: Callable[..., Settings], serve: Serve
) -> None:
    url = serve(auth_settings(max_uploads_per_client=3))
    auth = {"Authorization": httpx.BasicAuth("bob", PASSWORDS["bob"])._auth_header}
    with httpx.Client(base_url=url, auth=("bob", PASSWORDS["bob"])) as bob:
        locations = [bob.post("/v2/team/app/blobs/uploads/").headers["location"] for _ in range(10)]
    streams = [RawClient(url).send_head("PATCH", location, {**auth, "Content-Length": "10"}) for location in locations]
    for stream in streams:
        stream.send(b"12345")  # all ten are streaming now, or refused
    wait_for_streams(url, 3)
    for stream in streams:
        with contextlib.suppress(OSError):  # a refused one may be closed already
            stream.send(b"67890")
    statuses = sorted(read(stream.getresponse()).status for stream in streams)
    assert statuses == [202] * 3 + [429] * 7
