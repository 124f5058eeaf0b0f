"""The image tier: the Dockerfile built on a private dockerd (overlay2) from a debootstrap'd stand-in base."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.image.standin import build_stand_in
from tests.support.daemons import Daemon, start_dockerd

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
IMAGE_TAG = "storj-registry:image-tier"
BUILD_TIMEOUT_S = 900


@pytest.fixture(scope="module")
def image_dockerd() -> Iterator[Daemon]:
    daemon = start_dockerd(storage_driver="overlay2")
    yield daemon
    daemon.stop()


@pytest.fixture(scope="module")
def image(image_dockerd: Daemon) -> str:
    """The project's image, built the way `docs/kubernetes.md` says; the time each step took is printed."""
    started = time.monotonic()
    base = build_stand_in(image_dockerd)
    based = time.monotonic()
    image_dockerd.run(
        "build",
        "--network",
        "host",
        "--build-arg",
        f"PYTHON_IMAGE={base}",
        "--tag",
        IMAGE_TAG,
        str(REPOSITORY_ROOT),
        timeout=BUILD_TIMEOUT_S,
    )
    print(f"image tier: stand-in base {based - started:.0f} s, image build {time.monotonic() - based:.0f} s")
    return IMAGE_TAG
