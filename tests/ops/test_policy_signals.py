"""The policy file in a running `storj-registry serve`: SIGHUP reads it again (and does not stop the service),
and a malformed file at start-up is a one-line configuration error naming REGISTRY_POLICY."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.ops._service import ServiceProcess
from tests.support.pushing import OCI_MANIFEST, push_image, push_manifest
from tests.support.tools import free_port

NAME = "release/app"
LOCKED = 'immutable:\n  - repositories: ["release/*"]\n    tags: ["v*"]\n'


def environment(tmp_path: Path, policy: Path) -> dict[str, str]:
    return {
        "REGISTRY_STORAGE": "filesystem",
        "REGISTRY_DATA_DIR": str(tmp_path / "data"),
        "REGISTRY_STAGING_DIR": str(tmp_path / "staging"),
        "REGISTRY_POLICY": str(policy),
    }


def test_sighup_reloads_the_policy_the_file_times_do_not_show(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(LOCKED)
    service = ServiceProcess(tmp_path / "service", environment(tmp_path, policy))
    try:
        service.wait_ready()
        with httpx.Client(base_url=service.url, timeout=30) as client:
            first = push_image(client, NAME, "v1", seed=1)
            second = push_image(client, NAME, "dev", seed=2)
            assert push_manifest(client, NAME, "v1", second.manifest, OCI_MANIFEST).status_code == 403
            before = policy.stat()
            policy.write_text(LOCKED.replace('"v*"', '"w*"'))  # same size; the mtime is put back below
            os.utime(policy, ns=(before.st_atime_ns, before.st_mtime_ns))
            assert push_manifest(client, NAME, "v1", second.manifest, OCI_MANIFEST).status_code == 403
            service.process.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 10
            while push_manifest(client, NAME, "v1", second.manifest, OCI_MANIFEST).status_code != 201:
                assert time.monotonic() < deadline, service.log()
                time.sleep(0.1)
            assert client.get(f"/v2/{NAME}/manifests/v1").content != first.manifest
        assert service.process.poll() is None
    finally:
        service.stop()
    assert "policy file" in service.log() and "loaded" in service.log()


def test_a_malformed_policy_stops_the_start_with_one_line(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("immutable: [{repositories: ['a/*']}]\n")
    env = {key: value for key, value in os.environ.items() if not key.startswith("REGISTRY_")}
    result = subprocess.run(
        [sys.executable, "-m", "app", "serve", "--port", str(free_port())],
        env={**env, **environment(tmp_path, policy)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "storj-registry: invalid configuration: REGISTRY_POLICY: immutable rule 1: names no tags"
    )
    assert "Traceback" not in result.stderr
