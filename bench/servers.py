"""The two registries under test, each a real subprocess on 127.0.0.1 with its own empty bucket.

- this service: `python -m app serve` (what `storj-registry serve` runs), s3 backend, its own staging dir;
- the reference: Debian's `docker-registry` (CNCF distribution 2.8) with its s3 driver on the same SeaweedFS.

Both get an environment without `REGISTRY_*` (distribution reads those as config overrides, this service as
settings) and without `AWS_CA_BUNDLE` (distribution's s3 driver fails on it even over plain http).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.support.seaweed import S3Server
from tests.support.tools import free_port, require_tool

READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
ROOT = Path(__file__).resolve().parent.parent
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only, whatever *_proxy says


@dataclass
class Registry:
    """A registry subprocess; `address` is `127.0.0.1:PORT` as skopeo wants it."""

    label: str
    process: subprocess.Popen[bytes]
    address: str
    bucket: str
    log: Path

    def reset_peak_rss(self) -> None:
        """Make VmHWM start again from the current RSS (Linux `clear_refs` 5), so each case gets its own peak."""
        Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")

    def peak_rss(self) -> int:
        """Peak resident memory (VmHWM) in bytes since the last reset."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmHWM in /proc status")

    def metric(self, name: str) -> float | None:
        """A counter or histogram sum from the service's `/metrics` (None for the reference, or when absent)."""
        if self.label != "service":
            return None
        with _DIRECT.open(f"http://{self.address}/metrics", timeout=10) as response:
            for line in response.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
        return None

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=STOP_TIMEOUT_S)


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_") and k != "AWS_CA_BUNDLE"}


def start_service(
    s3: S3Server,
    bucket: str,
    workdir: Path,
    part_size: int,
    concurrency: int,
    endpoint: str | None = None,
    extra_env: dict[str, str] | None = None,
) -> Registry:
    """This service as a real `serve` subprocess (its RSS is what the benchmark reports).

    `endpoint` puts something (a latency proxy) between the service and the store.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = (
        clean_env()
        | s3.registry_environment(bucket)
        | {"REGISTRY_S3_ENDPOINT": endpoint or s3.endpoint}
        | {
            "REGISTRY_S3_PART_SIZE": str(part_size),
            "REGISTRY_S3_MAX_CONCURRENCY": str(concurrency),
            "REGISTRY_STAGING_DIR": str(workdir / "staging"),
            "PYTHONPATH": str(ROOT),
        }
        | (extra_env or {})
    )
    command = [
        sys.executable,
        "-m",
        "app",
        "serve",
        "--port",
        str(port),
        "--log-level",
        os.environ.get("BENCH_LOG_LEVEL", "warning"),
    ]
    return _launch("service", command, env, workdir, port, bucket)


def start_reference(s3: S3Server, bucket: str, workdir: Path, endpoint: str | None = None) -> Registry:
    """`docker-registry serve CONFIG.yml` with the s3 driver on the same SeaweedFS (through `endpoint` if given)."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = workdir / "config.yml"
    config.write_text(json.dumps(reference_config(s3, bucket, port, endpoint), indent=2))  # JSON is YAML
    command = [require_tool("docker-registry"), "serve", str(config)]
    return _launch("reference", command, clean_env(), workdir, port, bucket)


def reference_config(s3: S3Server, bucket: str, port: int, endpoint: str | None = None) -> dict[str, object]:
    return {
        "version": 0.1,
        "log": {"level": "error", "accesslog": {"disabled": True}},
        "storage": {
            "s3": {
                "accesskey": s3.access_key,
                "secretkey": s3.secret_key,
                "region": s3.region,
                "regionendpoint": endpoint or s3.endpoint,
                "bucket": bucket,
                "secure": False,
                "v4auth": True,
                "rootdirectory": "/",
            },
            "maintenance": {"uploadpurging": {"enabled": False}},
            "redirect": {"disable": True},
        },
        "http": {"addr": f"127.0.0.1:{port}", "secret": "bench-secret"},
    }


def _launch(label: str, command: list[str], env: dict[str, str], workdir: Path, port: int, bucket: str) -> Registry:
    log = workdir / f"{label}.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            command,
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    registry = Registry(label, process, f"127.0.0.1:{port}", bucket, log)
    try:
        _wait_ready(registry)
    except BaseException:
        registry.stop()
        raise
    return registry


def _wait_ready(registry: Registry) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if registry.process.poll() is not None:
            raise RuntimeError(f"{registry.label} exited: {registry.log.read_text(errors='replace')[-2000:]}")
        with contextlib.suppress(OSError), _DIRECT.open(f"http://{registry.address}/v2/", timeout=2) as response:
            if response.status == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{registry.label} not ready after {READY_TIMEOUT_S:.0f}s")
