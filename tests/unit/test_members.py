"""Membership, ownership and holders (app/cluster/members.py), peers answered by an httpx transport in memory."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from app.cluster.members import CHANGE_SECONDS, PEER_HEADER, Members, member_id
from app.settings import Settings

SECRET = "a-secret-of-sixteen-or-more"
URLS = [f"http://10.0.0.{n}:5000" for n in range(1, 5)]
NAMES = [f"team-{n}/app" for n in range(400)]


def peers_answering(ready: set[str], secret: str = SECRET) -> httpx.AsyncClient:
    """A client whose peers answer `/_peer/ready`: 200 if ready, 403 for another secret, else no connection."""

    def answer(request: httpx.Request) -> httpx.Response:
        if request.headers.get(PEER_HEADER.decode()) != secret:
            return httpx.Response(403)
        base = f"{request.url.scheme}://{request.url.host}:{request.url.port}"
        if base not in ready:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200)

    return httpx.AsyncClient(transport=httpx.MockTransport(answer))


def view(url: str, peers: list[str], ready: set[str], draining: bool = False) -> Members:
    members = Members(url, ",".join(peers), SECRET, 5, draining=lambda: draining)
    asyncio.run(members.refresh(peers_answering(ready)))
    return members


def owners(members: Members) -> dict[str, str]:
    return {name: members.owner(name) or members.url for name in NAMES}


def test_replicas_with_the_same_view_agree_on_one_owner_per_repository_and_share_the_work() -> None:
    views = [owners(view(url, URLS[:3], set(URLS[:3]))) for url in URLS[:3]]
    assert views[0] == views[1] == views[2]
    shares = [list(views[0].values()).count(url) for url in URLS[:3]]
    assert min(shares) > len(NAMES) / 5, shares


def test_a_replica_joining_takes_its_share_and_moves_nothing_else() -> None:
    before = owners(view(URLS[0], URLS, set(URLS[:3])))
    after = owners(view(URLS[0], URLS, set(URLS)))
    moved = {name for name in NAMES if before[name] != after[name]}
    assert moved and all(after[name] == URLS[3] for name in moved)
    assert len(moved) < len(NAMES) / 2


def test_a_draining_replica_owns_nothing_and_the_others_own_everything() -> None:
    draining = view(URLS[0], URLS[:3], set(URLS[:3]), draining=True)
    assert all(draining.owner(name) in URLS[1:3] for name in NAMES)
    assert URLS[0] not in draining.ready()


def test_a_peer_not_answering_or_refusing_the_secret_owns_nothing() -> None:
    members = Members(URLS[0], ",".join(URLS[:3]), SECRET, 5)
    asyncio.run(members.refresh(peers_answering({URLS[1]}, secret="another-secret-entirely")))
    assert members.ready() == [URLS[0]]
    asyncio.run(members.refresh(peers_answering({URLS[1]})))
    assert sorted(members.ready()) == sorted(URLS[:2])


def test_an_unreachable_owner_is_left_out_at_once_and_back_after_a_probe() -> None:
    members = view(URLS[0], URLS[:3], set(URLS[:3]))
    owned_by_second = [name for name in NAMES if members.owner(name) == URLS[1]]
    members.unreachable(URLS[1])
    assert all(members.owner(name) in (None, URLS[2]) for name in owned_by_second)
    asyncio.run(members.refresh(peers_answering(set(URLS[:3]))))
    assert all(members.owner(name) == URLS[1] for name in owned_by_second)


def test_an_upload_id_names_its_holder_and_only_a_listed_member_is_ever_a_holder() -> None:
    members = view(URLS[0], URLS[:3], set(URLS[:3]))
    session = member_id(URLS[2]) + "0" * 24
    assert members.holder(session) == URLS[2]
    assert members.holder(member_id(URLS[0]) + "0" * 24) is None  # this replica's own
    assert members.holder(member_id("http://attacker.example:80") + "0" * 24) is None
    members.unreachable(URLS[2])
    assert members.holder(session) == URLS[2]  # still its holder: a forward then finds out, and answers 404


def test_others_are_asked_to_finish_their_writes_only_after_owners_changed() -> None:
    asked: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.path)
        return httpx.Response(200 if request.url.path == "/_peer/ready" or request.url.host == "10.0.0.2" else 204)

    members = Members(URLS[0], ",".join(URLS[:3]), SECRET, 5)

    async def scenario() -> tuple[bool, bool]:
        await members.refresh(httpx.AsyncClient(transport=httpx.MockTransport(answer)))
        right_after = await members.settle("team/app", ["sha256:" + "a" * 64])
        members.changed_at = time.monotonic() - CHANGE_SECONDS - 1
        return right_after, await members.settle("team/app", ["sha256:" + "a" * 64])

    right_after, much_later = asyncio.run(scenario())
    assert (right_after, much_later) == (True, False)  # True: the first peer was writing one
    assert asked.count("/_peer/settle") == 2  # both peers, once


@pytest.mark.parametrize("peers", ["dns+http://localhost:5000"])
def test_a_dns_name_resolves_to_one_member_per_address(peers: str) -> None:
    members = Members("http://10.9.9.9:5000", peers, SECRET, 5)
    assert "http://127.0.0.1:5000" in members._resolve()


def test_a_pods_ipv6_address_in_the_advertise_url_is_the_member_its_peers_resolve() -> None:
    """The chart writes `http://$(POD_IP):5000`; on an IPv6 cluster that is `http://fd00::a:5000`, and the peers
    find the pod by DNS as `http://[fd00::a]:5000` (members.py brackets what it resolves)."""
    settings = Settings(
        peers="dns+http://peers.registry.svc.cluster.local:5000",
        advertise_url="http://FD00:0::A:5000",
        peer_secret=SECRET,
    )
    assert settings.advertise_url == "http://[fd00::a]:5000"
    assert member_id(settings.advertise_url) == member_id("http://[fd00::a]:5000")
    assert (
        Settings(
            peers="http://fd00::b:5000,http://10.0.0.1:5000", advertise_url="http://10.0.0.1:5000", peer_secret=SECRET
        ).peers
        == "http://[fd00::b]:5000,http://10.0.0.1:5000"
    )
