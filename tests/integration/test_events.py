"""Events: a local receiver gets every change in distribution's envelope, signed, in order, and never slows a push.

The receiver (tests/support/event_receiver.py) checks the HMAC signature and Content-Type of every request. It is
down for a while (events arrive once it is up), slow (pushes finish while it holds every request), and gone at a
restart (the events wait on the staging volume and reach it from the next process).
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.events.envelope import Origin, Source, Target
from app.events.spool import Spool
from app.main import create_app
from app.registry.events import RegistryEvents
from app.settings import Settings, SettingsError, load_settings
from app.tools.commands import run_gc
from tests.conftest import filesystem_settings
from tests.security.conftest import htpasswd_line
from tests.support.event_receiver import Receiver, running_receiver
from tests.support.pushing import OCI_MANIFEST, digest, push_blob, push_image
from tests.support.registry_server import running_registry

SECRET = "shared-secret"
PUSHER = ("pusher", "pusher-secret")
OCTET_STREAM = "application/octet-stream"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver(SECRET) as running:
        yield running


@pytest.fixture
def settings_for(tmp_path: Path) -> Callable[..., Settings]:
    """Filesystem registry with one user (the events' actor) and the given endpoints."""
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(htpasswd_line(*PUSHER) + "\n")

    def make(*endpoints: dict[str, Any], **extra: object) -> Settings:
        return filesystem_settings(
            tmp_path, auth_htpasswd=htpasswd, delete_enabled=True, events_endpoints=list(endpoints), **extra
        )

    return make


def endpoint(receiver: Receiver, name: str, **extra: object) -> dict[str, Any]:
    return {"name": name, "url": receiver.url, "secret": SECRET, "max_backoff_seconds": 0.2, **extra}


def metric(client: httpx.Client, name: str, endpoint_name: str) -> float:
    found = re.search(rf'^{name}{{endpoint="{endpoint_name}"}} (\S+)$', client.get("/metrics").text, re.MULTILINE)
    return float(found[1]) if found else 0.0


def test_every_change_reaches_the_receiver_signed_in_order_in_distributions_envelope(
    settings_for: Callable[..., Settings], receiver: Receiver
) -> None:
    headers = {"Authorization": "Bearer receiver-token"}
    with running_registry(settings_for(endpoint(receiver, "all", headers=headers))) as url:
        with httpx.Client(base_url=url, auth=PUSHER, headers={"User-Agent": "events-test/1"}) as client:
            image = push_image(client, "team/app", "v1")
            layer = digest(image.layers[0])
            assert client.post(f"/v2/team/copy/blobs/uploads/?mount={layer}&from=team/app").status_code == 201
            assert client.head(f"/v2/team/shared/blobs/{layer}").status_code == 200  # shared on a HEAD miss
            assert client.delete("/v2/team/app/manifests/v1").status_code == 202
            assert client.delete(f"/v2/team/app/manifests/{image.digest}").status_code == 202
        events = receiver.wait_for(8)
    assert not receiver.bad
    assert all(request["Authorization"] == "Bearer receiver-token" for request in receiver.requests)
    kinds = [(e["action"], e["target"]["repository"], e["target"].get("tag", "")) for e in events]
    assert kinds == [
        ("push", "team/app", ""),
        ("push", "team/app", ""),
        ("push", "team/app", ""),
        ("push", "team/app", "v1"),
        ("mount", "team/copy", ""),
        ("mount", "team/shared", ""),
        ("delete", "team/app", "v1"),
        ("delete", "team/app", ""),
    ]
    manifest = events[3]
    assert manifest["target"] == {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": image.digest,
        "size": len(image.manifest),
        "length": len(image.manifest),
        "repository": "team/app",
        "tag": "v1",
    }  # no `url`: REGISTRY_SERVICE_URL is not set (test_an_event_names_the_configured_service_url)
    assert manifest["request"]["method"] == "PUT" and manifest["request"]["useragent"] == "events-test/1"
    assert manifest["request"]["addr"].startswith("127.0.0.1:") and manifest["request"]["host"]
    assert manifest["actor"] == {"name": "pusher"}
    assert set(manifest["source"]) == {"addr", "instanceID"}
    assert events[0]["target"]["mediaType"] == OCTET_STREAM
    assert events[4]["target"]["fromRepository"] == "team/app" and events[4]["target"]["digest"] == layer
    assert events[5]["target"]["fromRepository"] == "team/app" and events[5]["target"]["size"] == len(image.layers[0])
    assert events[6]["target"] == {"repository": "team/app", "tag": "v1"}
    assert events[7]["target"] == {"repository": "team/app", "digest": image.digest}
    assert len({e["id"] for e in events}) == len(events)
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT[\d:.]+Z", e["timestamp"]) for e in events)


def test_events_never_name_the_pushers_host_header(settings_for: Callable[..., Settings], receiver: Receiver) -> None:
    """Without REGISTRY_SERVICE_URL an event names no URL: a `Host` header is the pusher's to choose, and a
    receiver that fetches the target would read the pusher's server."""
    with running_registry(settings_for(endpoint(receiver, "all"))) as url:
        with httpx.Client(base_url=url, auth=PUSHER, headers={"Host": "attacker.example"}) as client:
            push_image(client, "team/app", "v1")
        events = receiver.wait_for(4)
    assert all("url" not in event["target"] for event in events)
    assert all("attacker" not in json.dumps(event["target"]) for event in events)


def test_an_event_names_the_configured_service_url() -> None:
    published: list[tuple[str, Target]] = []

    class Recording:
        enabled = True

        def publish(self, kind: str, target: Target, origin: Origin) -> None:
            published.append((kind, target))

    events = RegistryEvents(Recording(), "https://push.example.com/")  # type: ignore[arg-type]
    events.manifest_pushed("team/app", "v1", "sha256:" + "a" * 64, OCI_MANIFEST, 10)
    events.blob_pushed("team/app", "sha256:" + "b" * 64, 3)
    assert [target.url for _, target in published] == [
        "https://push.example.com/v2/team/app/manifests/sha256:" + "a" * 64,
        "https://push.example.com/v2/team/app/blobs/sha256:" + "b" * 64,
    ]


def test_endpoints_get_only_the_kinds_and_repositories_they_ask_for(
    settings_for: Callable[..., Settings], receiver: Receiver
) -> None:
    with running_receiver(SECRET) as deploys:
        watch = endpoint(deploys, "deploys", events=["manifest.push"], repositories=["prod/*"])
        with running_registry(settings_for(endpoint(receiver, "everything"), watch)) as url:
            with httpx.Client(base_url=url, auth=PUSHER) as client:
                push_image(client, "dev/app", "v1")
                pushed = push_image(client, "prod/app", "v1", seed=1)
            receiver.wait_for(8)
            shipped = deploys.wait_for(1)
    assert [(e["target"]["repository"], e["target"]["digest"]) for e in shipped] == [("prod/app", pushed.digest)]
    assert len(deploys.events) == 1


def wait_until(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition did not come true"
        time.sleep(0.05)


def test_a_receiver_that_is_down_gets_the_events_once_it_is_up(
    settings_for: Callable[..., Settings], receiver: Receiver
) -> None:
    later = Receiver(SECRET)  # nothing listens on its port yet: connections are refused
    try:
        settings = settings_for(endpoint(later, "later"))
        with running_registry(settings) as url, httpx.Client(base_url=url, auth=PUSHER) as client:
            for seed in range(3):
                push_image(client, "team/app", f"v{seed}", seed=seed)
            wait_until(lambda: metric(client, "registry_events_delivery_failures_total", "later") >= 2)
            later.start()
            events = later.wait_for(12)
            wait_until(lambda: metric(client, "registry_events_pending", "later") == 0)
            assert metric(client, "registry_events_sent_total", "later") == 12
        tags = [e["target"].get("tag") for e in events if e["target"].get("tag")]
        assert tags == ["v0", "v1", "v2"]  # in push order, and none twice
        assert not later.bad
    finally:
        later.stop()


def test_a_slow_receiver_does_not_delay_pushes_and_a_full_queue_drops_and_counts(
    settings_for: Callable[..., Settings], receiver: Receiver
) -> None:
    with running_registry(settings_for(endpoint(receiver, "slow", max_pending=6, timeout_seconds=120))) as url:
        with httpx.Client(base_url=url, auth=PUSHER) as client, receiver.hold():
            for seed in range(3):  # 12 events; the receiver answers none of them while the pushes run
                push_image(client, "team/app", f"v{seed}", seed=seed)
            assert receiver.events == []
            assert metric(client, "registry_events_dropped_total", "slow") == 6
            assert metric(client, "registry_events_pending", "slow") == 6
        events = receiver.wait_for(6)
        with httpx.Client(base_url=url) as client:
            wait_until(lambda: metric(client, "registry_events_sent_total", "slow") == 6)
    assert [e["target"].get("tag") for e in events if e["target"].get("tag")] == ["v0"]  # the oldest were kept


def test_events_pending_at_shutdown_are_sent_by_the_next_process(
    settings_for: Callable[..., Settings], tmp_path: Path
) -> None:
    receiver = Receiver(SECRET)  # down while the first process runs
    settings = settings_for(endpoint(receiver, "restart"))
    try:
        with running_registry(settings) as url, httpx.Client(base_url=url, auth=PUSHER) as client:
            push_image(client, "team/app", "v1")
        kept = list((settings.staging_dir / "events" / "restart").glob("*.jsonl"))
        assert len(kept) == 1 and len(kept[0].read_text().splitlines()) == 4
        receiver.start()
        with running_registry(settings):
            events = receiver.wait_for(4)
        assert [e["action"] for e in events] == ["push"] * 4 and events[3]["target"]["tag"] == "v1"
        assert not list((settings.staging_dir / "events" / "restart").iterdir())
    finally:
        receiver.stop()


def test_gc_announces_what_it_removed(
    settings_for: Callable[..., Settings], receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_for(endpoint(receiver, "gc", events=["gc.*"]))
    with running_registry(settings) as url, httpx.Client(base_url=url, auth=PUSHER) as client:
        orphan = push_blob(client, "team/app", b"nobody references me")
    for name, value in settings.model_dump(mode="json", exclude_defaults=True).items():
        monkeypatch.setenv(f"REGISTRY_{name.upper()}", value if isinstance(value, str) else json.dumps(value))
    options = argparse.Namespace(delete=True, grace_seconds=0, settle_seconds=0, mark_seconds=0, abandon=False)
    assert run_gc(options) == 0
    (event,) = receiver.wait_for(1)
    assert event["action"] == "delete" and event["actor"] == {"name": "gc"}
    assert event["target"] == {"mediaType": OCTET_STREAM, "digest": orphan, "repository": "team/app"}


def test_the_audit_log_has_every_event_with_who_and_from_where(
    settings_for: Callable[..., Settings], tmp_path: Path
) -> None:
    audit = tmp_path / "audit.jsonl"
    with running_registry(settings_for(events_audit_log=audit)) as url, httpx.Client(base_url=url, auth=PUSHER) as c:
        push_image(c, "team/app", "v1")
        assert c.delete("/v2/team/app/manifests/v1").status_code == 202
    lines = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [line["kind"] for line in lines] == ["blob.push"] * 3 + ["manifest.push", "tag.delete"]
    assert all(line["actor"] == {"name": "pusher"} and line["request"]["addr"] for line in lines)


def test_endpoint_settings_are_checked_at_start(tmp_path: Path, receiver: Receiver) -> None:
    def load(*endpoints: dict[str, Any]) -> Settings:
        return load_settings(data_dir=tmp_path, staging_dir=tmp_path, events_endpoints=list(endpoints))

    with pytest.raises(SettingsError, match="matches no event kind"):
        create_app(load(endpoint(receiver, "typo", events=["manifest.pushed"])))
    with pytest.raises(SettingsError, match="unique"):
        load(endpoint(receiver, "twice"), endpoint(receiver, "twice"))
    with pytest.raises(SettingsError, match=r"REGISTRY_EVENTS_ENDPOINTS\[0\]\.url"):
        load({"name": "x", "url": "ftp://example"})
    with pytest.raises(SettingsError, match="REGISTRY_EVENTS_AUDIT_LOG"):
        create_app(load_settings(data_dir=tmp_path, staging_dir=tmp_path, events_audit_log=tmp_path / "no/such/dir"))


def test_replicas_sharing_a_staging_volume_send_each_kept_file_once(tmp_path: Path) -> None:
    stopped = Source()
    events = [stopped.event("tag.delete", Target("team/app", tag=f"v{n}"), Origin(actor="a")) for n in range(3)]
    Spool(tmp_path, "stopped-replica").save("hooks", events)
    first, second = Spool(tmp_path, "one"), Spool(tmp_path, "two")
    taken = [first.take("hooks"), second.take("hooks")]
    assert sorted(len(batch) for batch in taken) == [0, 3]
    assert [e.body for e in taken[0] or taken[1]] == [e.body for e in events]
    assert not list((tmp_path / "events" / "hooks").iterdir())
