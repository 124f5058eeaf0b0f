"""Genuine docker and containerd daemons for the end-to-end tier, private to one test session.

Each daemon gets its own root, state and unix sockets under a fresh directory and binds no TCP port:
dockerd runs without iptables or bridge (on `vfs` unless asked for overlay2), containerd without its CRI plugin.
Both are started in their own process group, die with the test process (PR_SET_PDEATHSIG), and `stop()` kills them
even when a test failed.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .tools import require_tool

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
COMMAND_TIMEOUT_S = 300.0


class CommandFailed(AssertionError):
    """A client command exited non-zero; the message carries its output (and the daemon's log tail)."""


@dataclass
class Daemon:
    """A started daemon process, its private directory, and how to run its client."""

    name: str
    process: subprocess.Popen[bytes]
    directory: Path
    log_path: Path
    client: list[str]
    env: dict[str, str] = field(default_factory=dict)

    def run(self, *args: str, timeout: float = COMMAND_TIMEOUT_S) -> str:
        """Run the client with `args`; returns stdout, raises CommandFailed with stderr and the log tail."""
        done = subprocess.run(
            [*self.client, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **self.env},
            stdin=subprocess.DEVNULL,
        )
        if done.returncode != 0:
            raise CommandFailed(
                f"{' '.join([*self.client, *args])} exited {done.returncode}\n"
                f"stdout: {done.stdout[-4000:]}\nstderr: {done.stderr[-4000:]}\n"
                f"{self.name} log tail:\n{self.log_tail()}"
            )
        return done.stdout

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"

    def stop(self) -> None:
        """SIGTERM (the daemon stops its own children), then SIGKILL the group; remove the private directory."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=STOP_TIMEOUT_S)
                break
        shutil.rmtree(self.directory, ignore_errors=True)


def require_root(daemon: str) -> None:
    """Skip (fail under CI=true, like a missing tool) when not root: these daemons mount and chown as root."""
    if os.geteuid() == 0:
        return
    message = f"{daemon} needs root: run the end-to-end tier as root (CI does)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def start_dockerd(storage_driver: str = "vfs") -> Daemon:
    """dockerd from Debian's docker.io, listening only on a unix socket; `run()` drives the docker CLI.

    vfs works on any filesystem but copies every layer whole; overlay2 (the image tier's, which builds) does not.
    """
    dockerd = require_tool("dockerd")
    require_root("dockerd")
    directory = _private_dir("dockerd-")
    config = directory / "daemon.json"
    config.write_text("{}")  # never read /etc/docker/daemon.json
    socket = directory / "docker.sock"
    command = [
        dockerd,
        "--iptables=false",
        "--ip6tables=false",
        "--bridge=none",
        f"--storage-driver={storage_driver}",
        f"--host=unix://{socket}",
        f"--data-root={directory / 'data'}",
        f"--exec-root={directory / 'exec'}",
        f"--pidfile={directory / 'docker.pid'}",
        f"--config-file={config}",
    ]
    env = {"DOCKER_HOST": f"unix://{socket}", "DOCKER_CONFIG": str(directory / "client")}
    daemon = _launch("dockerd", command, directory, [require_tool("docker")], env)
    _wait_ready(daemon, "version", "--format", "{{.Server.Version}}")
    return daemon


def start_containerd() -> Daemon:
    """containerd with a private root, state and gRPC socket, CRI disabled; `run()` drives `ctr`."""
    containerd = require_tool("containerd")
    ctr = require_tool("ctr")
    require_root("containerd")
    directory = _private_dir("containerd-")
    socket = directory / "containerd.sock"
    config = directory / "config.toml"
    config.write_text(
        "version = 2\n"
        f'root = "{directory / "root"}"\n'
        f'state = "{directory / "state"}"\n'
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
        f'[grpc]\n  address = "{socket}"\n'
        f'[plugins."io.containerd.internal.v1.opt"]\n  path = "{directory / "opt"}"\n'
    )
    command = [containerd, "--config", str(config), "--log-level", "warn"]
    daemon = _launch("containerd", command, directory, [ctr, "--address", str(socket)])
    _wait_ready(daemon, "version")
    return daemon


def _private_dir(prefix: str) -> Path:
    """A short path under the temp dir: unix socket paths (exec-root/containerd/...) must stay under 108 bytes."""
    return Path(tempfile.mkdtemp(prefix=prefix))


def _launch(
    name: str, command: list[str], directory: Path, client: list[str], env: dict[str, str] | None = None
) -> Daemon:
    log_path = directory / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            process_group=0,
            preexec_fn=die_with_parent,
        )
    return Daemon(name, process, directory, log_path, client, env or {})


def _wait_ready(daemon: Daemon, *probe: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        if daemon.process.poll() is not None:
            tail = daemon.log_tail()
            daemon.stop()
            raise RuntimeError(f"{daemon.name} exited with {daemon.process.returncode}; log tail:\n{tail}")
        try:
            daemon.run(*probe, timeout=10)
            return
        except (CommandFailed, subprocess.TimeoutExpired):
            if time.monotonic() > deadline:
                daemon.stop()
                raise
        time.sleep(0.2)


def die_with_parent() -> None:
    """In the child: be SIGKILLed when the test process dies without stopping the daemon."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
