"""`storj-registry serve` as a real child process on a free loopback port, its stderr kept for the test to read."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support.seaweed import S3Server
from tests.support.tools import free_port

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 20.0


def s3_environment(s3_server: S3Server, bucket: str, staging: Path, **extra: str) -> dict[str, str]:
    """REGISTRY_* variables for the S3 backend on the test SeaweedFS."""
    return {**s3_server.registry_environment(bucket), "REGISTRY_STAGING_DIR": str(staging), **extra}


class ServiceProcess:
    """One `python -m app serve` child; `url` once it answers /healthz."""

    def __init__(self, workdir: Path, environment: dict[str, str]) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"service-{self.port}.log"
        workdir.mkdir(parents=True, exist_ok=True)
        # The child must not pick up REGISTRY_* settings of the test process, nor a .env file (cwd is private).
        env = {key: value for key, value in os.environ.items() if not key.startswith("REGISTRY_")}
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "app", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                cwd=workdir,
                env={**env, **environment, "PYTHONPATH": str(REPOSITORY_ROOT)},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"service exited with {self.process.returncode}:\n{self.log()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"service did not answer /healthz within {START_TIMEOUT_S:.0f} s:\n{self.log()}")

    def terminate(self) -> None:
        self.process.send_signal(signal.SIGTERM)

    def wait(self) -> int:
        return self.process.wait(timeout=STOP_TIMEOUT_S)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=STOP_TIMEOUT_S)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")
