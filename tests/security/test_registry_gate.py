"""The registry's own checks, whatever the way in: names, tags and digests refused inside `Manifests.put` (not only
in a route), a declared size that is not the stored one, and sharing that looks nothing up for a caller who may
not push where the blob would go."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from app.errors import DigestInvalid, NameDenied, TagInvalid
from app.registry import build_registry
from app.settings import Settings
from app.storage import Storage, open_storage
from tests.conftest import filesystem_settings
from tests.support.pushing import OCI_CONFIG, OCI_MANIFEST, digest, error_code, image_manifest, push_blob
from tests.support.registry_server import running_registry

CONFIG = b'{"architecture":"amd64","os":"linux"}'
DATA = b"a layer another repository holds" * 64


@pytest.mark.parametrize(
    ("name", "reference", "tags", "refused"),
    [
        ("team/app", "../../release/app/manifests/v1", (), TagInvalid),
        ("team/app", "v1", ("ok", "../x"), TagInvalid),
        ("team/app", "v1", (7,), TagInvalid),
        ("team/../app", "v1", (), NameDenied),
        ("team/app", "sha256:nothex", (), DigestInvalid),
        ("team/app", "v1", ("sha256:" + "0" * 64,), TagInvalid),
    ],
)
def test_every_way_in_meets_the_same_gate(
    tmp_path: Any, name: str, reference: str, tags: tuple[object, ...], refused: type[Exception]
) -> None:
    """`copy`, `sync` and whatever comes next call `Manifests.put` directly: it refuses what a route would."""
    settings = filesystem_settings(tmp_path)
    registry = build_registry(settings)
    body = image_manifest(CONFIG, [])
    with pytest.raises(refused):
        asyncio.run(registry.manifests.put(name, reference, body, OCI_MANIFEST, tags=tags))  # type: ignore[arg-type]
    assert not list(open_storage(settings).list("v2/"))


def test_a_manifest_declaring_another_size_than_the_stored_blob_is_refused(settings: Settings) -> None:
    """A 37-byte config declared as 2 bytes: clients would trust the lie (the page once read whole configs so)."""
    with running_registry(settings) as url, httpx.Client(base_url=url) as client:
        push_blob(client, "team/app", CONFIG)
        lying = json.loads(image_manifest(CONFIG, []))
        lying["config"] = {"mediaType": OCI_CONFIG, "digest": digest(CONFIG), "size": 2}
        body = json.dumps(lying).encode()
        answer = client.put("/v2/team/app/manifests/v1", content=body, headers={"Content-Type": OCI_MANIFEST})
        assert answer.status_code == 400 and error_code(answer) == "MANIFEST_INVALID"
        assert answer.json()["errors"][0]["detail"] == {"digest": digest(CONFIG), "declared": 2, "stored": len(CONFIG)}
        assert client.get("/v2/team/app/manifests/v1").status_code == 404


class KeyLog:
    """The store, with the keys asked of it written down (a record of calls, not a stand-in)."""

    def __init__(self, inner: Storage) -> None:
        self.inner = inner
        self.keys: list[str] = []

    def __getattr__(self, name: str) -> Any:
        found = getattr(self.inner, name)
        if not callable(found):
            return found

        def logged(*args: Any, **kwargs: Any) -> Any:
            if args and isinstance(args[0], str):
                self.keys.append(args[0])
            return found(*args, **kwargs)

        return logged


def test_a_head_miss_by_a_caller_who_may_not_push_there_looks_up_nothing(
    auth_settings: Callable[..., Settings],
) -> None:
    """carol may only pull team/*: her HEAD of a blob another repository holds must not read its location record
    (the store's requests, seen on /metrics, would tell her the blob exists where she may not look)."""
    settings = auth_settings(share_min_bytes=0)
    storage = KeyLog(open_storage(settings))
    with running_registry(settings, build_registry(settings, storage)) as url:  # type: ignore[arg-type]
        with httpx.Client(base_url=url, auth=("alice", "alice-secret")) as alice:
            pushed = push_blob(alice, "private/base", DATA)
        deadline = time.monotonic() + 10
        while f"v2/_blobs/{pushed}" not in storage.inner.list("v2/_blobs/"):  # written behind the answer
            assert time.monotonic() < deadline
            time.sleep(0.05)
        storage.keys.clear()
        with httpx.Client(base_url=url, auth=("carol", "carol-secret")) as carol:
            assert carol.head(f"/v2/team/app/blobs/{pushed}").status_code == 404
    assert not [key for key in storage.keys if key.startswith("v2/_blobs/") or "private/base" in key]
