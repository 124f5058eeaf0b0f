"""The class, not just the cases: generated hostile OCI layouts, docker archives and upstream registries.

For whatever hypothesis makes of tags, names, entries, sizes, encodings, pagination, redirects and `Retry-After`:
- nothing is written outside the named repository (and the shared documents a copy updates);
- nothing takes longer than its budget;
- every failure is one line of the summary (`FAILED …`), never a traceback.

Local sources go through the CLI as a user runs it (`storj-registry copy`); upstreams through `sync`'s own
functions with small retry and time budgets, so that a case costs milliseconds rather than minutes of backoff.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from app.cli import main
from app.mirror.copier import Copier
from app.mirror.progress import Quiet
from app.mirror.remote import RemoteOptions, RemoteRegistry
from app.mirror.sync import Mirror, sync_mirror
from app.registry import build_registry
from app.storage import open_storage
from tests.conftest import filesystem_settings
from tests.mirror.hostile import Answer, HostileUpstream, image_manifest, keys_outside, tags_page
from tests.support.images import REF_NAME, make_layer, write_image

NAME = "victim/app"
CASES = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
BUDGET_S = 10.0  # a local copy takes ~50 ms; an upstream case is bounded by the small options below
OPTIONS = RemoteOptions(
    attempts=3, backoff_s=0.01, max_backoff_s=0.05, retry_budget_s=0.2, document_s=2.0, max_tags=300,
    max_tag_pages=20, tag_list_s=3.0,
)  # fmt: skip

VALID_TAGS = st.from_regex(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,20}", fullmatch=True)
HOSTILE_TEXT = st.one_of(
    st.sampled_from(["../../release/app/manifests/v1", "..", ".", "a/b", "/abs", "a\\b", "a\x00b", "v1\nFAILED x", ""]),
    st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=20),
    st.text(alphabet="./\\:-_aZ09", max_size=20),
)
TAG_LIKE = st.one_of(VALID_TAGS, HOSTILE_TEXT)
JSON_ODDITY = st.one_of(st.none(), st.booleans(), st.integers(), st.lists(st.integers(), max_size=2), st.just({"a": 1}))


@contextmanager
def store() -> Iterator[Path]:
    """A fresh filesystem store and staging directory, as `storj-registry` finds them in the environment."""
    work = Path(tempfile.mkdtemp(prefix="hostile-"))
    names = {"REGISTRY_STORAGE": "filesystem", "REGISTRY_DATA_DIR": work / "data", "REGISTRY_STAGING_DIR": work / "st"}
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update({name: str(value) for name, value in names.items()})
    try:
        yield work
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(work, ignore_errors=True)


def copy(source: str, destination: str = NAME) -> tuple[int, str, str]:
    """`storj-registry copy SOURCE DESTINATION`, timed; (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    started = time.monotonic()
    with redirect_stdout(out), redirect_stderr(err):
        status = main(["copy", source, destination])
    assert time.monotonic() - started < BUDGET_S
    return status, out.getvalue(), err.getvalue()


def assert_contained(work: Path, status: int, out: str, err: str) -> None:
    """The summary (stdout) is one line a job and a total; stderr (progress, usage errors) has no traceback."""
    event(f"exit status {status}")  # pytest --hypothesis-show-statistics: how many cases got how far
    assert "Traceback" not in out + err
    lines = out.splitlines()
    if status == 2:
        assert out == "" and err.splitlines()[-1].startswith("storj-registry copy: "), err
    else:
        assert status in (0, 1) and len(lines) == 2, out
        assert lines[0].startswith("FAILED " if status else ("copied ", "up to date ")), out
    if (work / "data").exists():
        assert keys_outside(open_storage(filesystem_settings(work)), NAME) == []


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    layout = tmp_path_factory.mktemp("valid") / "layout"
    write_image(layout, "v1", [make_layer(21, 300)])
    return layout


VALID = st.just("VALID")  # the digest of the layout's image: half the entries name it, so copies get far
ENTRY = st.fixed_dictionaries(
    {"digest": st.one_of(VALID, st.one_of(HOSTILE_TEXT, JSON_ODDITY))},
    optional={
        "mediaType": st.one_of(st.just("application/vnd.oci.image.manifest.v1+json"), HOSTILE_TEXT, JSON_ODDITY),
        "size": st.one_of(st.integers(-1, 10**12), JSON_ODDITY),
        "annotations": st.one_of(st.fixed_dictionaries({REF_NAME: st.one_of(TAG_LIKE, JSON_ODDITY)}), JSON_ODDITY),
        "platform": st.one_of(st.just({"os": "linux", "architecture": "amd64"}), JSON_ODDITY),
    },
)


@CASES
@given(entries=st.lists(st.one_of(ENTRY, JSON_ODDITY), max_size=3), reference=st.one_of(st.none(), TAG_LIKE))
def test_hostile_oci_layouts(image: Path, entries: list[Any], reference: str | None) -> None:
    valid = json.loads((image / "index.json").read_text())["manifests"][0]
    with store() as work:
        layout = work / "layout"
        shutil.copytree(image, layout)
        entries = [
            {**e, "digest": valid["digest"]} if isinstance(e, dict) and e.get("digest") == "VALID" else e
            for e in entries
        ]
        (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": entries}))
        source = f"oci:{layout}" + (f":{reference}" if reference is not None else "")
        assert_contained(work, *copy(source))


@CASES
@given(
    repo_tags=st.one_of(
        st.lists(st.one_of(TAG_LIKE.map(lambda tag: f"team/app:{tag}"), TAG_LIKE, JSON_ODDITY), max_size=3), JSON_ODDITY
    ),
    config=st.one_of(st.just("CONFIG"), HOSTILE_TEXT, JSON_ODDITY),
    layers=st.one_of(st.just("LAYERS"), st.lists(st.one_of(HOSTILE_TEXT, JSON_ODDITY), max_size=2), JSON_ODDITY),
    reference=st.one_of(st.none(), TAG_LIKE),
)
def test_hostile_docker_archives(repo_tags: Any, config: Any, layers: Any, reference: str | None) -> None:
    config_bytes = json.dumps({"rootfs": {"type": "layers", "diff_ids": []}, "os": "linux"}).encode()
    entry = {
        "Config": "config.json" if config == "CONFIG" else config,
        "RepoTags": repo_tags,
        "Layers": [] if layers == "LAYERS" else layers,
    }
    with store() as work:
        archive = work / "saved.tar"
        with tarfile.open(archive, "w") as tar:
            for name, data in (("manifest.json", json.dumps([entry]).encode()), ("config.json", config_bytes)):
                member = tarfile.TarInfo(name)
                member.size = len(data)
                tar.addfile(member, io.BytesIO(data))
        source = f"docker-archive:{archive}" + (f":{reference}" if reference is not None else "")
        assert_contained(work, *copy(source))


# ---- upstream registries -------------------------------------------------------------------------------------------

RETRY_AFTER = st.one_of(
    st.integers(0, 10**12).map(str),
    st.sampled_from(["²", "1.5", "-1", " 3 ", "Wed, 21 Oct 2015 07:28:00 GMT", "Fri, 31 Dec 9999 23:59:59 GMT"]),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=255), max_size=30),
)
LINK = st.one_of(
    st.none(),
    st.just("/v2/team/app/tags/list?page=next"),
    st.just("http://127.0.0.2:9/v2/team/app/tags/list"),
    st.sampled_from(["ftp://x/y", "//elsewhere.test/v2/", "", "<>", "javascript:alert(1)", "http://[::1"]),
)
REDIRECT = st.sampled_from(["http://127.0.0.1:9/nothing", "ftp://x/y", "/v2/team/app/manifests/v1", "//a.test/x"])
FAILURE = st.one_of(
    st.builds(lambda code, wait: Answer(code, headers={"Retry-After": wait}), st.sampled_from([429, 503]), RETRY_AFTER),
    st.builds(lambda status: Answer(status), st.sampled_from([400, 401, 403, 404, 418])),
    st.builds(lambda where: Answer(302, headers={"Location": where}), REDIRECT),
    st.builds(lambda challenge: Answer(401, headers={"WWW-Authenticate": challenge}), st.sampled_from(
        ['Bearer realm="ftp://x"', 'Bearer realm="http://127.0.0.1:9/token"', "Digest x", 'Basic realm="r"', "Bearer"]
    )),
)  # fmt: skip
BODY = st.one_of(
    st.just(None),  # the image's own manifest
    st.sampled_from([b"", b"{", b"[]", b'{"schemaVersion": 2}', b"\xff\xfe"]),
    st.sampled_from([1000, 4 * 1024 * 1024 - 9, 5 * 1024 * 1024]).map(lambda size: b'{"pad":"' + b" " * size + b'"}'),
)
MANIFEST = st.one_of(
    FAILURE,
    st.builds(
        lambda body, gzip, chunked: Answer(body=image_manifest() if body is None else body, gzip=gzip, chunked=chunked,
                                           headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"}),
        BODY, st.booleans(), st.booleans(),
    ),
)  # fmt: skip
PAGE = st.one_of(
    FAILURE,
    st.builds(tags_page, st.lists(st.one_of(st.just("v1"), TAG_LIKE, JSON_ODDITY), max_size=6), LINK),
    st.builds(lambda body: Answer(body=body), st.sampled_from([b"{}", b'{"tags": "v1"}', b'{"tags": {}}', b"null"])),
)  # fmt: skip


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pages=st.lists(PAGE, min_size=1, max_size=4), manifest=MANIFEST, blob=st.one_of(st.none(), FAILURE))
def test_hostile_upstreams(pages: list[Answer], manifest: Answer, blob: Answer | None) -> None:
    def script(path: str, query: dict[str, list[str]], nth: int) -> Answer | None:
        if path == "/v2/team/app/tags/list":
            return pages[min(nth, len(pages)) - 1]
        if path == "/v2/team/app/manifests/v1":
            return manifest
        return blob if "/blobs/" in path else None

    with store() as work, HostileUpstream(script) as upstream:
        started = time.monotonic()
        outcomes = asyncio.run(sync_upstream(work, upstream.host))
        assert time.monotonic() - started < BUDGET_S
        assert all(outcome.ok or "\n" not in (outcome.error or "") for outcome in outcomes)
        event(f"{sum(outcome.ok for outcome in outcomes)} copied, {sum(not o.ok for o in outcomes)} failed")
        if (work / "data").exists():
            assert keys_outside(open_storage(filesystem_settings(work)), "team/app") == []


async def sync_upstream(work: Path, host: str) -> list[Any]:
    """What `sync` runs for one mirror (`tag_regex: .`), with budgets small enough for many cases a second."""
    mirror = Mirror(source=f"docker://{host}/team/app", tag_regex=".", referrers=False)
    source = RemoteRegistry(mirror.source.removeprefix("docker://"), OPTIONS)
    try:
        async with build_registry(filesystem_settings(work)).running() as registry:  # as `sync` runs it
            return await sync_mirror(Copier(registry, Quiet(), with_referrers=False), mirror, source)
    finally:
        await source.aclose()
