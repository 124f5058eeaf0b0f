"""Keys outside the layout's grammar are refused by the store itself, whichever way in forgot to check a name or tag.

A tag `../../release/app/manifests/v1` makes the key `v2/victim/manifests/../../release/app/manifests/v1`: a
filesystem store that resolved it wrote another repository's tag. The store refuses such keys before any write.
"""

from __future__ import annotations

import contextlib

import pytest

from app.settings import Settings
from app.storage import Storage, open_storage
from app.storage.base import KeyInvalid, StorageFault

HOSTILE_KEYS = [
    "v2/victim/manifests/../../release/app/manifests/v1",
    "v2/victim/manifests/./v1",
    "v2/victim//manifests/v1",
    "/v2/victim/manifests/v1",
    "v2/victim/manifests/..",
    "v2/victim/manifests/v1\\..\\..\\x",
    "v2/victim/manifests/v1\0",
    "../outside",
    ".meta/v2/victim/manifests/v1.json",
]
TARGET = "v2/release/app/manifests/v1"


@pytest.fixture
def storage(settings: Settings) -> Storage:
    store = open_storage(settings)
    store.put_bytes(TARGET, b"the real tag", "application/json")
    return store


def attempt(settings: Settings) -> contextlib.AbstractContextManager[object]:
    """The filesystem store refuses; S3 has no paths to resolve (a literal key, or the server's refusal)."""
    if settings.storage == "filesystem":
        return pytest.raises(KeyInvalid)
    return contextlib.suppress(KeyInvalid, StorageFault)


@pytest.mark.parametrize("key", HOSTILE_KEYS)
def test_a_key_outside_the_grammar_never_reaches_another_key(storage: Storage, settings: Settings, key: str) -> None:
    with attempt(settings):
        storage.put_bytes(key, b"hostile", "application/json")
    with attempt(settings):
        storage.copy(TARGET, key)
    assert storage.read_small(TARGET)[0] == b"the real tag"  # type: ignore[index]


@pytest.mark.parametrize("settings", ["filesystem"], indirect=True)
@pytest.mark.parametrize("key", HOSTILE_KEYS)
def test_the_filesystem_store_refuses_reads_and_listings_too(storage: Storage, key: str) -> None:
    for read in (storage.stat, storage.read_small, storage.delete):
        with pytest.raises(KeyInvalid):
            read(key)
    with pytest.raises(KeyInvalid):
        list(storage.list(key + "/"))
    with pytest.raises(KeyInvalid):
        list(storage.list_children(key + "/"))
    assert storage.read_small(TARGET)[0] == b"the real tag"  # type: ignore[index]


def test_a_refused_key_is_a_400_oci_error() -> None:
    error = KeyInvalid("not a key of the layout")
    assert isinstance(error, ValueError)
    assert (error.status, error.body()["errors"][0]["code"]) == (400, "NAME_INVALID")
