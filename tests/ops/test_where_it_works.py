"""Where the service and the tools work, said in their first lines; and a store that cannot be used, said once.

Real `storj-registry` processes in a private directory: the start-up line naming the store, the staging directory
and the public URL; the tools' first line; misspelt REGISTRY_* variables (environment or `.env`); a port in use; an
unreachable or missing bucket told once, promptly, in the same words in the log and in `/readyz`.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx
import pytest

from app.settings import Settings, store_line
from tests.ops._service import ServiceProcess, s3_environment
from tests.ops.test_front_door import run, wait_for_log
from tests.support.seaweed import S3Server
from tests.support.tools import free_port

START_SECONDS = 5.0  # a start that waited on an unreachable store took 10 s before it listened


def test_the_start_names_the_store_staging_and_public_url(tmp_path: Path) -> None:
    service = ServiceProcess(tmp_path, {"REGISTRY_PUBLIC_URL": "https://images.example.com"})
    try:
        service.wait_ready()
    finally:
        service.stop()
    line = next(line for line in service.log().splitlines() if "store:" in line)
    assert f"store: filesystem {tmp_path / 'data'}; staging {tmp_path / 'staging'}" in line, line
    assert "public URL https://images.example.com" in line
    assert service.log().index("store:") < service.log().index("listening on http://127.0.0.1:")


@pytest.mark.parametrize("command", ["fsck", "gc"])
def test_a_tool_names_the_store_first_and_each_misspelt_variable(tmp_path: Path, command: str) -> None:
    (tmp_path / ".env").write_text("REGISTRY_S3_ENDPONT=https://gateway.example.com\n")
    done = run(tmp_path, command, REGISTRY_STORGE="s3", REGISTRY_PORT="tcp://10.0.0.1:5000")
    lines = done.stderr.splitlines()
    assert lines[0] == f"storj-registry {command}: store: filesystem {tmp_path / 'data'}", done.stderr
    assert "REGISTRY_STORGE is not a setting and is ignored (did you mean REGISTRY_STORAGE?)" in lines[1]
    assert "REGISTRY_S3_ENDPONT in .env is not a setting and is ignored" in lines[2]
    assert lines[2].endswith("(did you mean REGISTRY_S3_ENDPOINT?)")
    assert "REGISTRY_PORT" not in done.stderr  # Kubernetes sets it for a Service named `registry`: not ours


def test_the_service_warns_of_a_misspelt_variable(tmp_path: Path) -> None:
    service = ServiceProcess(tmp_path, {"REGISTRY_DELETE_ENABLE": "true"})
    try:
        service.wait_ready()
    finally:
        service.stop()
    assert (
        "WARNING storj_registry: REGISTRY_DELETE_ENABLE is not a setting and is ignored "
        "(did you mean REGISTRY_DELETE_ENABLED?)" in service.log()
    )


def test_a_missing_endpoint_is_said_to_be_storjs_gateway() -> None:
    settings = Settings(storage="S3", s3_bucket="images", s3_access_key="k", s3_secret_key="s", s3_prefix="team")
    assert "s3 bucket images prefix team/ at https://gateway.storjshare.io (REGISTRY_S3_ENDPOINT not set: " in (
        store_line(settings)
    )
    named = Settings(storage="s3", s3_bucket="b", s3_access_key="k", s3_secret_key="s", s3_endpoint="http://s3:1")
    assert "at http://s3:1;" in store_line(named)


def test_a_port_in_use_is_one_line_and_nothing_is_written(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        done = run(tmp_path, "serve", "--port", port)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"storj-registry: cannot listen on 127.0.0.1:{port}: another process uses this port "
        "(choose another with --port or REGISTRY_LISTEN_PORT)"
    ]
    assert list(tmp_path.iterdir()) == []  # no store, no staging, no page


# --- a store that cannot be used: told once, promptly, in the same words ------------------------------------


def store_warnings(log: str) -> list[str]:
    """The WARNING lines that speak of the store (the authentication warning aside)."""
    return [line for line in log.splitlines() if " WARNING " in line and "authentication is OFF" not in line]


def test_an_unreachable_store_does_not_hold_the_start_and_is_told_once(tmp_path: Path, s3_server: S3Server) -> None:
    settings = s3_environment(s3_server, "any", tmp_path / "staging")
    settings |= {"REGISTRY_S3_ENDPOINT": f"http://127.0.0.1:{free_port()}", "REGISTRY_GC_WATCH_SECONDS": "1"}
    started = time.monotonic()
    service = ServiceProcess(tmp_path, settings)
    try:
        service.wait_ready()
        assert time.monotonic() - started < START_SECONDS, service.log()
        assert "the store is not usable" in wait_for_log(service, "the store is not usable", START_SECONDS)
        for _ in range(3):  # pushes meet the same fault
            httpx.post(f"{service.url}/v2/team/app/blobs/uploads/?digest=sha256:{'0' * 64}", content=b"", timeout=30)
        time.sleep(3)  # the gc watch meets it every second
        ready = httpx.get(f"{service.url}/readyz", timeout=10).json()
    finally:
        service.stop()
    sentence = "the registry cannot connect to its S3 endpoint"
    assert ready["checks"]["storage"] == sentence
    assert store_warnings(service.log()) == [
        line for line in service.log().splitlines() if f"the store is not usable: {sentence};" in line
    ], service.log()
    assert len(store_warnings(service.log())) == 1


def test_a_missing_bucket_is_named_in_the_log_and_in_readyz(tmp_path: Path, s3_server: S3Server) -> None:
    service = ServiceProcess(tmp_path, s3_environment(s3_server, "no-such-bucket", tmp_path / "staging"))
    try:
        service.wait_ready()
        log = wait_for_log(service, "the store is not usable", START_SECONDS)
        ready = httpx.get(f"{service.url}/readyz", timeout=10).json()
    finally:
        service.stop()
    assert "the store is not usable: the bucket no-such-bucket does not exist;" in log
    assert ready["checks"]["storage"] == "the bucket no-such-bucket does not exist"
    assert "KeyError" not in service.log()
