"""`/metrics` after a push, and the access log: one line per request with its id, route, repository and digest."""

from __future__ import annotations

import json
import logging
import re

import httpx
import pytest

from app.observability import JsonFormatter, TextFormatter
from app.settings import Settings
from tests.ops.conftest import sample, scrape
from tests.support.pushing import digest, push_image

UPLOAD = "/v2/{name:path}/blobs/uploads/{upload_id}"
START = "/v2/{name:path}/blobs/uploads/"
MANIFEST = "/v2/{name:path}/manifests/{reference}"
SECRET = "c2VjcmV0LXBhc3N3b3Jk"


def test_metrics_count_a_push_by_route_template(client: httpx.Client, settings: Settings) -> None:
    repository = f"ops/metrics-{settings.storage}"
    before = scrape(client)
    pushed = push_image(client, repository, "v1")
    assert client.get(f"/nowhere/{'x' * 40}").status_code == 404
    after = scrape(client)

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    blobs = [pushed.config, *pushed.layers]
    assert delta("registry_http_requests_total", method="POST", route=START, status="202") == len(blobs)
    assert delta("registry_http_requests_total", method="PUT", route=UPLOAD, status="201") == len(blobs)
    assert delta("registry_http_requests_total", method="PUT", route=MANIFEST, status="201") == 1
    assert delta("registry_http_requests_total", method="GET", route="unmatched", status="404") == 1
    assert delta("registry_http_request_duration_seconds_count", method="PUT", route=UPLOAD) == len(blobs)
    assert delta("registry_received_bytes_total") == sum(len(blob) for blob in blobs)
    assert delta("registry_committed_blobs_total", how="upload") == len(blobs)
    assert delta("registry_commit_seconds_count") == len(blobs)
    assert sample(after, "registry_active_uploads") == 0
    routes = {dict(labels).get("route") for name, labels in after if name == "registry_http_requests_total"}
    assert all(route == "unmatched" or route.startswith("/") for route in routes)
    assert not any("xxxx" in route or re.search(r"[0-9a-f]{32}", route) for route in routes)
    assert repository not in client.get("/metrics").text  # no series is labelled by a client's names


@pytest.mark.parametrize("settings", ["s3"], indirect=True)
def test_access_log_lines_carry_request_id_route_repository_and_digest(
    client: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="storj_registry.access")
    client.headers["Authorization"] = f"Basic {SECRET}"
    started = client.post("/v2/ops/logs/blobs/uploads/", headers={"X-Request-Id": "push-42"})
    assert started.headers["X-Request-Id"] == "push-42"
    odd = client.get("/v2/ops/logs/tags/list", headers={"X-Request-Id": 'spaces and "quotes" are refused'})
    assert re.fullmatch(r"[0-9a-f]{32}", odd.headers["X-Request-Id"])
    pushed = push_image(client, "ops/logs", "v1")

    lines = [json.loads(JsonFormatter().format(record)) for record in caplog.records]
    assert len(lines) == 2 + 3 * 2 + 1  # the POST, the GET, then three blobs (POST + PUT) and the manifest
    first = lines[0]
    assert first["duration_ms"] > 0 and first["time"].endswith("+00:00")
    assert first | {"duration_ms": 0, "time": ""} == {
        "time": "",
        "level": "INFO",
        "logger": "storj_registry.access",
        "message": f"POST {START} 202",
        "request_id": "push-42",
        "method": "POST",
        "route": START,
        "status": 202,
        "duration_ms": 0,
        "bytes_in": 0,
        "bytes_out": 0,
        "client": "127.0.0.1",
        "repository": "ops/logs",
    }
    assert lines[1]["request_id"] == odd.headers["X-Request-Id"]
    committed = [line for line in lines if line["route"] == UPLOAD]
    assert [(line["digest"], line["bytes_in"]) for line in committed] == [
        (digest(blob), len(blob)) for blob in (pushed.config, *pushed.layers)
    ]
    manifest = lines[-1]
    assert (manifest["route"], manifest["tag"], manifest["digest"]) == (MANIFEST, "v1", pushed.digest)
    text = "\n".join(TextFormatter().format(record) for record in caplog.records)
    assert "request_id=push-42" in text and f"digest={pushed.digest}" in text
    assert SECRET not in text and SECRET not in json.dumps(lines)
