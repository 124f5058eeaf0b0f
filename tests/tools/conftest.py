"""A sample bucket for fsck and gc: images, an index, referrers, an untagged manifest and an orphan blob."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import httpx
import pytest

from app.settings import Settings
from app.storage import Storage, open_storage
from app.tools.gc_run import RunTiming
from tests.support.pushing import (
    OCI_INDEX,
    OCI_MANIFEST,
    PushedImage,
    descriptor,
    digest,
    image_manifest,
    push_blob,
    push_image,
    push_manifest,
)

NAME = "tools/app"
QUICK = RunTiming(settle_seconds=0, mark_seconds=0)  # no service watches these buckets: nothing to wait for
Report = TypeVar("Report")
EMPTY = b"{}"


@dataclass
class Sample:
    """What was pushed, by role."""

    tagged: PushedImage  # tag v1
    replaced: PushedImage  # was tag v2, then v2 was pointed at `tagged`: now untagged
    child: bytes  # pushed by digest, child of the index tagged `multi`
    index: bytes
    signature: bytes  # referrer of `tagged`, pushed by digest
    orphan_signature: bytes  # referrer of `replaced`
    orphan_blob: bytes  # uploaded, never referenced


def referrer(subject: bytes, note: str) -> bytes:
    empty = descriptor("application/vnd.oci.empty.v1+json", EMPTY)
    document = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.signature",
        "config": empty,
        "layers": [empty],
        "subject": descriptor(OCI_MANIFEST, subject),
        "annotations": {"note": note},
    }
    return json.dumps(document).encode()


def put(client: httpx.Client, reference: str, body: bytes, media_type: str = OCI_MANIFEST) -> None:
    response = push_manifest(client, NAME, reference, body, media_type)
    assert response.status_code == 201, response.text


def push_sample(client: httpx.Client) -> Sample:
    tagged = push_image(client, NAME, "v1", seed=1)
    replaced = push_image(client, NAME, "v2", seed=2)
    put(client, "v2", tagged.manifest)
    child_config = b'{"architecture":"arm64","os":"linux"}'
    push_blob(client, NAME, child_config)
    child = image_manifest(child_config, tagged.layers)
    put(client, digest(child), child)
    index = json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [descriptor(OCI_MANIFEST, child)]}
    ).encode()
    put(client, "multi", index, OCI_INDEX)
    push_blob(client, NAME, EMPTY)
    signature, orphan_signature = referrer(tagged.manifest, "kept"), referrer(replaced.manifest, "orphan")
    put(client, digest(signature), signature)
    put(client, digest(orphan_signature), orphan_signature)
    orphan_blob = b"uploaded but never referenced"
    push_blob(client, NAME, orphan_blob)
    return Sample(tagged, replaced, child, index, signature, orphan_signature, orphan_blob)


@pytest.fixture
def sample(client: httpx.Client) -> Sample:
    return push_sample(client)


@pytest.fixture
def storage(settings: Settings) -> Storage:
    """The same bucket as the service's, opened as the tools open it."""
    return open_storage(settings)


def run_tool(tool: Callable[..., Report], storage: Storage, **options: object) -> tuple[Report, list[str]]:
    """Run fsck or gc with stdout captured: its report and its output lines."""
    out = io.StringIO()
    report = tool(storage, out=out, **options)
    return report, out.getvalue().splitlines()
