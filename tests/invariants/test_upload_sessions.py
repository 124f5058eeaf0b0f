"""Upload sessions under racing requests: the bytes published under a digest are exactly the bytes verified.

A chunk that arrives while the final PUT verifies waits for the session's lock; once the session is verified it
takes nothing more, and what goes to the bucket is the verified length, whatever was appended to the file.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import shutil
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

import httpx
import pytest

from app.errors import BlobUploadUnknown
from app.registry.staging import LOCK, VERIFIED_MARKERS, Sealed, Staging
from app.registry.uploads import Body, Uploads
from app.settings import Settings
from app.storage import open_storage
from tests.support.invariants import assert_every_blob_hashes_to_its_key
from tests.support.pushing import error_code
from tests.support.registry_server import running_registry

NAME = "sessions/app"
DATA = random.Random(19).randbytes(300_000)


def digest_of(data: bytes, algorithm: str) -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


@pytest.mark.parametrize("algorithm", ["sha256", "sha512"])
@pytest.mark.parametrize("in_background", [True, False], ids=["publish-behind", "publish-before-answer"])
def test_a_chunk_sent_while_the_final_put_verifies_is_refused_and_never_published(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, algorithm: str, in_background: bool
) -> None:
    """The regression of "a blob published under a digest holds other bytes": the PUT is held inside its digest
    check while a PATCH with more bytes arrives; the PATCH must find the session verified."""
    verifying, release = threading.Event(), threading.Event()
    real_seal = Staging.seal

    def held_seal(self, upload, sealed):  # type: ignore[no-untyped-def]
        verifying.set()  # the digest matched; the PUT holds the session while it records that
        release.wait(10)
        return real_seal(self, upload, sealed)

    monkeypatch.setattr(Staging, "seal", held_seal)
    settings = settings.model_copy(update={"publish_in_background": in_background})
    digest = digest_of(DATA, algorithm)
    with running_registry(settings) as url, httpx.Client(base_url=url, timeout=30) as client:
        location = client.post(f"/v2/{NAME}/blobs/uploads/").headers["Location"]
        assert client.patch(location, content=DATA).status_code == 202
        with ThreadPoolExecutor(2) as pool:
            put = pool.submit(client.put, location, params={"digest": digest})
            assert verifying.wait(10)
            patch = pool.submit(client.patch, location, content=b"appended after the seal" * 100)
            wait([patch], timeout=0.5)  # the PATCH is in, waiting for the session
            release.set()
            put_answer, patch_answer = put.result(), patch.result()
        assert put_answer.status_code == 201, put_answer.text
        assert patch_answer.status_code == 404, patch_answer.text
        assert error_code(patch_answer) == "BLOB_UPLOAD_UNKNOWN"
        blob = client.get(f"/v2/{NAME}/blobs/{digest}")
        assert blob.status_code == 200 and blob.content == DATA
    assert assert_every_blob_hashes_to_its_key(open_storage(settings)) == 1


def test_a_chunk_from_another_process_while_a_session_is_removed_finds_it_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The regression of a 500 (FileNotFoundError on the session's data) when a cancel, or a final PUT with the
    wrong digest, removes a session while another replica sharing the staging disk appends to it: the other
    replica's PATCH arrives while the directory is being deleted, its lock file gone and its data not yet, so it
    took a new lock and appended (or found the data gone under it)."""
    remover, other = Uploads(tmp_path), Uploads(tmp_path)  # two replicas on one staging directory
    upload = remover.create(NAME)
    answers: list[str] = []
    real_rmtree = shutil.rmtree

    def rmtree_with_a_chunk_midway(path: Path, ignore_errors: bool = False) -> None:
        (Path(path) / LOCK).unlink(missing_ok=True)
        try:
            asyncio.run(other.receive(upload, Body(one_chunk(b"late chunk"))))
            answers.append("202")
        except BlobUploadUnknown:
            answers.append("404")
        real_rmtree(path, ignore_errors=ignore_errors)

    monkeypatch.setattr(shutil, "rmtree", rmtree_with_a_chunk_midway)
    asyncio.run(remover.cancel(upload))
    assert answers == ["404"]
    assert other.staging.session_ids() == []


def test_a_seal_while_another_session_of_the_blob_drops_its_marker_is_sealed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The regression of a 500 (FileExistsError in a final PUT), seen with three replicas round-robin: two sessions
    of one blob, one sealing while the other drops its marker. The folder of the blob's markers was there when the
    seal's mkdir tried it, and removed (empty) before mkdir checked it was a folder."""
    staging = Staging(tmp_path)
    sealed = Sealed(f"sha256:{hashlib.sha256(DATA).hexdigest()}", len(DATA))
    leaving, sealing = staging.create("a" * 32, NAME), staging.create("b" * 32, NAME)
    staging.seal(leaving, sealed)
    real_mkdir = os.mkdir

    def mkdir_while_the_other_leaves(path: str, mode: int = 0o777) -> None:
        try:
            real_mkdir(path, mode)
        except FileExistsError:
            if Path(path).name == sealed.digest and (Path(path) / leaving.id).exists():
                staging.unseal(leaving, sealed)  # its marker and the then empty folder go
            raise

    monkeypatch.setattr(os, "mkdir", mkdir_while_the_other_leaves)
    staging.seal(sealing, sealed)
    monkeypatch.undo()
    assert staging.sealed(sealing) == sealed
    assert [path.name for path in (tmp_path / VERIFIED_MARKERS / sealed.digest).iterdir()] == [sealing.id]


async def one_chunk(data: bytes) -> AsyncIterator[bytes]:
    yield data
