"""A stand-in for the `python:3.11-slim` base, so the Dockerfile builds where Docker Hub cannot be reached.

Debian bookworm's minimal root filesystem with python3, venv and pip (from the Debian mirror, by debootstrap) is
imported as an image; the machine's CA bundle and pip settings are then layered on top, so `pip install` inside
`docker build --network host` reaches the package index exactly as pip on this machine does. Only the stand-in
carries them: the project's image is built FROM it unchanged (`--build-arg PYTHON_IMAGE=...`).

The debootstrap'd tarball is machine-independent and costs from 40 s to a few minutes, so it is kept in
`$STORJ_REGISTRY_CACHE` (default `~/.cache/storj-registry`), which CI may keep between runs; without it, it is
made again.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.support.daemons import Daemon
from tests.support.tools import require_tool

SUITE = "bookworm"
PACKAGES = ("python3", "python3-venv", "python3-pip", "python-is-python3", "ca-certificates")
# Never needed in an image, and a third of the root filesystem: apt's caches, documentation, translations.
TRIMMED = ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man", "usr/share/locale")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
BASE_TAG = f"storj-registry-base:{SUITE}"
STAND_IN_TAG = f"storj-registry-python:{SUITE}"
IN_IMAGE_CA = "/etc/ssl/certs/ca-certificates.crt"
PIP_KEYS = ("index-url", "extra-index-url", "trusted-host", "timeout", "default-timeout", "retries")
DEBOOTSTRAP_TIMEOUT_S = 900


def cache_dir() -> Path:
    configured = os.environ.get("STORJ_REGISTRY_CACHE")
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "storj-registry"


def base_tarball() -> Path:
    """The trimmed root filesystem as a tarball, from the cache, or made now by debootstrap and cached."""
    name = hashlib.sha256(" ".join((SUITE, *PACKAGES, *TRIMMED)).encode()).hexdigest()[:12]
    target = cache_dir() / f"{SUITE}-minbase-python-{name}.tar"
    if target.is_file():
        return target
    debootstrap = require_tool("debootstrap")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".debootstrap-") as scratch:
        root = Path(scratch) / "root"
        mirror = os.environ.get("DEBIAN_MIRROR", DEFAULT_MIRROR)
        command = [debootstrap, "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(root), mirror]
        _run(command, DEBOOTSTRAP_TIMEOUT_S)
        for trimmed in TRIMMED:
            for child in (root / trimmed).iterdir():
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        partial = Path(scratch) / "base.tar"
        _run(["tar", "-C", str(root), "-cf", str(partial), "."], DEBOOTSTRAP_TIMEOUT_S)
        partial.rename(target)  # whole or absent: an interrupted run leaves no half tarball behind
    return target


def build_stand_in(docker: Daemon) -> str:
    """Import the base and layer this machine's CA bundle and pip settings on it; returns the stand-in's tag."""
    docker.run("import", str(base_tarball()), BASE_TAG)
    with tempfile.TemporaryDirectory(prefix="stand-in-") as context:
        shutil.copyfile(machine_ca_bundle(), Path(context) / "ca-certificates.crt")
        (Path(context) / "pip.conf").write_text(pip_configuration())
        (Path(context) / "Dockerfile").write_text(
            f"FROM {BASE_TAG}\nCOPY ca-certificates.crt {IN_IMAGE_CA}\nCOPY pip.conf /etc/pip.conf\n"
        )
        docker.run("build", "--quiet", "--tag", STAND_IN_TAG, context)
    return STAND_IN_TAG


def machine_ca_bundle() -> Path:
    """The CA bundle pip and Python trust here (it may hold a proxy's CA that the Debian bundle lacks)."""
    for variable in ("PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"):
        value = os.environ.get(variable)
        if value and Path(value).is_file():
            return Path(value)
    return Path(IN_IMAGE_CA)


def pip_configuration() -> str:
    """pip.conf for inside a build: where this machine's pip fetches from (http and https indexes only, local
    paths mean nothing in a container) and the CA bundle to trust."""
    listed = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    kept: dict[str, str] = {}
    for line in listed.splitlines():
        key, _, value = line.partition("=")
        name = key.rpartition(".")[2]
        values = value.strip().strip("'\"").split()
        if name.endswith("index-url"):
            values = [url for url in values if url.startswith(("http://", "https://"))]
        if name in PIP_KEYS and values:
            kept[name] = " ".join(values)
    kept["cert"] = IN_IMAGE_CA
    return "[global]\n" + "".join(f"{name} = {value}\n" for name, value in kept.items())


def _run(command: list[str], timeout: float) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise AssertionError(
            f"{' '.join(command)} exited {done.returncode}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        )
