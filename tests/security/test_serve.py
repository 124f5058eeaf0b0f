"""`storj-registry serve` itself: HTTPS from the settings, warnings when unguarded, refusal of bad auth files."""

from __future__ import annotations

import contextlib
import logging
import os
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from app.edge import warn_if_exposed
from app.settings import Settings
from tests.security.conftest import PASSWORDS
from tests.security.pki import Pki
from tests.support.tools import free_port

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]


def serve(tmp_path: Path, **settings: str) -> tuple[subprocess.Popen[bytes], int, Path]:
    port = free_port()
    log = tmp_path / "serve.log"
    env = {key: value for key, value in os.environ.items() if not key.startswith("REGISTRY_")}
    env |= {"REGISTRY_DATA_DIR": str(tmp_path / "data"), "REGISTRY_STAGING_DIR": str(tmp_path / "staging")}
    env |= {f"REGISTRY_{name.upper()}": value for name, value in settings.items()}
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "app", "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=tmp_path,
            env={**env, "PYTHONPATH": str(REPOSITORY_ROOT)},
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    return process, port, log


def wait_for(url: str, verify: ssl.SSLContext | bool, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and process.poll() is None:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/healthz", verify=verify, timeout=1).status_code == 200:
                return
        time.sleep(0.05)
    raise AssertionError(f"serve did not come up (exit {process.poll()})")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait(timeout=20)


def test_serve_speaks_https_with_auth(tmp_path: Path, pki: Pki, auth_files: dict[str, Path]) -> None:
    process, port, log = serve(
        tmp_path,
        tls_cert=str(pki.server_cert),
        tls_key=str(pki.server_key),
        auth_htpasswd=str(auth_files["htpasswd"]),
    )
    try:
        url, verify = f"https://127.0.0.1:{port}", ssl.create_default_context(cafile=pki.ca_cert)
        wait_for(url, verify, process)
        assert httpx.get(f"{url}/v2/", verify=verify).status_code == 401
        assert httpx.get(f"{url}/v2/", verify=verify, auth=("bob", PASSWORDS["bob"])).status_code == 200
    finally:
        stop(process)
    assert "authentication is OFF" not in log.read_text()
    assert PASSWORDS["bob"] not in log.read_text()


def test_serve_without_auth_says_so(tmp_path: Path) -> None:
    process, port, log = serve(tmp_path)
    try:
        wait_for(f"http://127.0.0.1:{port}", True, process)
    finally:
        stop(process)
    assert "authentication is OFF" in log.read_text()


def test_serve_refuses_weak_password_hashes(tmp_path: Path) -> None:
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text("alice:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n")
    process, _, log = serve(tmp_path, auth_htpasswd=str(htpasswd))
    assert process.wait(timeout=20) == 2
    assert "REGISTRY_AUTH_HTPASSWD: line 1" in log.read_text()


def test_listening_beyond_loopback_is_loud_without_auth_or_tls(
    tmp_path: Path, auth_files: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    open_settings = Settings(storage="filesystem", data_dir=tmp_path, staging_dir=tmp_path)
    guarded = Settings(
        storage="filesystem", data_dir=tmp_path, staging_dir=tmp_path, auth_htpasswd=auth_files["htpasswd"]
    )
    warn_if_exposed("127.0.0.1", open_settings)
    assert not caplog.records
    warn_if_exposed("0.0.0.0", open_settings)
    assert "without authentication" in caplog.records[-1].getMessage()
    warn_if_exposed("0.0.0.0", guarded)
    assert "plain HTTP" in caplog.records[-1].getMessage()
