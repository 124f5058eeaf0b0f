"""Every per-client limit under a burst: N requests at once are treated like N in a row.

The requests go out together from one asyncio loop (one connection each), so they are all inside the service
before the first one is answered: a limit that is checked first and counted later lets such a burst through.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import bcrypt
import httpx
import pytest

from app.settings import Settings
from tests.security.conftest import PASSWORDS
from tests.support.pushing import push_image

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
