"""Pushes racing into a repository too big to list in one page, through two replicas (each rewriting the blob
summary behind its pushes, app/registry/blob_summaries.py): the summary is a hint, never a promise.

- every blob hashes to its key and every tag pulls, whatever the summary says;
- a process that believes the summary answers "absent" only for a blob whose digest a racing rewrite left out
  (its client uploads it again);
- each replica's next rewrite after it reads the summary again (a listing's window later, made short here) puts
  back what the race left out: memory keeps what it read and wrote;
- `fsck --repair` leaves no blob out of it.
"""

from __future__ import annotations

import io
import random
import time
from pathlib import Path

import httpx
import pytest

from app import layout
from app.registry import beliefs as beliefs_module
from app.registry import blob_summaries, build_registry
from app.storage import Storage
from app.tools import fsck as fsck_module
from tests.invariants.conftest import Cluster
from tests.invariants.test_shared_keys import WRITERS, at_once, client
from tests.support.invariants import assert_every_blob_hashes_to_its_key, assert_every_tag_pulls, assert_tags_listed
from tests.support.pushing import digest, monolithic_push
from tests.support.registry_server import running_registry

NAME = "inv/big"
PAGE = 4  # blobs a listing page holds here, so that a few make a repository too big to list
WINDOW_S = 1.0  # how long a listing or summary counts here


@pytest.fixture(autouse=True)
def small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(beliefs_module, "LISTING_PAGE", PAGE)
    monkeypatch.setattr(beliefs_module, "LISTING_TTL_S", WINDOW_S)
    monkeypatch.setattr(fsck_module, "LISTING_PAGE", PAGE)


def image(number: int) -> list[bytes]:
    config = b'{"architecture":"amd64","os":"linux","n":%d}' % number
    return [config, random.Random(number).randbytes(20_000), random.Random(-number).randbytes(30_000)]


def summarised(storage: Storage) -> blob_summaries.Summary:
    found = storage.read_small(layout.blob_summary(NAME))
    assert found is not None
    return blob_summaries.Summary.decode(found[0]) or blob_summaries.Summary()


def fresh_heads(cluster: Cluster, tmp_path: Path, digests: list[str]) -> dict[str, int]:
    """What a process that never saw these pushes (its own staging) answers a HEAD of each."""
    settings = cluster.settings.model_copy(update={"staging_dir": tmp_path / f"fresh-{random.random()}"})
    with running_registry(settings, build_registry(settings)) as url, httpx.Client(base_url=url, timeout=60) as http:
        return {d: http.head(f"/v2/{NAME}/blobs/{d}").status_code for d in digests}


def test_pushes_racing_into_a_big_repository_keep_every_promise_and_a_lost_digest_costs_one_upload(
    cluster: Cluster, tmp_path: Path
) -> None:
    storage = cluster.storage()
    held = [random.Random(1000 + n).randbytes(100) for n in range(PAGE + 2)]
    for blob in held:
        storage.put_bytes(layout.blob(NAME, digest(blob)), blob, layout.OCTET_STREAM)
    blob_summaries.write(storage, NAME, blob_summaries.Summary.of(digest(blob) for blob in held))

    def push(number: int) -> None:
        with client(cluster) as http:
            monolithic_push(http, NAME, f"t{number}", image(number))

    at_once(WRITERS, push)
    assert_every_blob_hashes_to_its_key(storage)
    assert sorted(assert_tags_listed(storage, NAME)) == sorted(f"t{n}" for n in range(WRITERS))
    assert_every_tag_pulls(storage)

    pushed = [digest(blob) for number in range(WRITERS) for blob in image(number)]
    heads = fresh_heads(cluster, tmp_path, pushed)
    in_summary = summarised(storage)
    for pushed_digest, status in heads.items():
        assert status == 200 or pushed_digest not in in_summary, heads
    for number, replica in enumerate(cluster.replicas, start=WRITERS):  # one push through each, one after another
        time.sleep(WINDOW_S + blob_summaries.KEY_INTERVAL_S)  # what each read counts no more; rewrites are over
        with httpx.Client(base_url=replica, timeout=60) as http:
            monolithic_push(http, NAME, f"t{number}", image(number))
        pushed += [digest(blob) for blob in image(number)]
    assert set(fresh_heads(cluster, tmp_path, pushed).values()) == {200}

    blob_summaries.write(
        storage, NAME, blob_summaries.Summary()
    )  # whatever happened to it, fsck --repair makes it whole
    assert fsck_module.fsck(storage, repair=True, out=io.StringIO()).problems
    assert not fsck_module.fsck(storage, out=io.StringIO()).problems
    assert all(digest(blob) in summarised(storage) for blob in held)
    assert set(fresh_heads(cluster, tmp_path, pushed).values()) == {200}
