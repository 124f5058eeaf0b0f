"""`storj-registry verify-pull`: through `preview` of a pushed store it finds nothing wrong; through a damaged one it
says what is wrong, in words, on both backends."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest

from app import cli, layout
from app.storage import Storage
from app.tools.preview import Preview
from app.tools.verify_pull import Findings, UsageError, parse_target, verify_pull
from tests.support.pushing import digest
from tests.tools.conftest import NAME, Sample


@pytest.fixture
def share(storage: Storage, sample: Sample) -> Iterator[str]:
    """The pushed sample, served as linksharing would: `host:port`."""
    with Preview(storage) as preview:
        yield preview.url.removeprefix("http://")


def pull(reference: str) -> tuple[Findings, list[str]]:
    out = io.StringIO()
    findings = verify_pull(reference, out=out)
    return findings, out.getvalue().splitlines()


def test_a_pushed_store_pulls_cleanly(share: str, sample: Sample) -> None:
    for tag in ("v1", "v2", "multi"):
        findings, lines = pull(f"{share}/{NAME}:{tag}")
        assert lines == [], lines
        assert findings.manifests >= 1 and findings.blobs >= 2
    index, _ = pull(f"{share}/{NAME}:multi")
    assert index.manifests == 2  # the index and its child
    by_digest, lines = pull(f"{share}/{NAME}@{sample.tagged.digest}")
    assert lines == [] and by_digest.blobs == 3


def test_a_damaged_store_is_described_in_words(storage: Storage, sample: Sample, share: str) -> None:
    layer = layout.blob(NAME, digest(sample.tagged.layers[0]))
    info = storage.stat(layer)
    assert info is not None
    storage.put_bytes(layer, b"x" + sample.tagged.layers[0][1:], info.content_type)
    storage.put_bytes(layout.manifest(NAME, "v1"), sample.tagged.manifest, "application/json", layout.MUTABLE_CACHE)
    storage.delete(layout.manifest(NAME, sample.tagged.digest))
    storage.delete(layout.manifest(NAME, digest(sample.child)))

    _, lines = pull(f"{share}/{NAME}:v1")
    assert len(lines) == 3, lines
    assert "is served as application/json: docker takes the media type from Content-Type" in lines[0]
    assert f"manifests/{sample.tagged.digest} answered 404: docker pulls the manifest by digest" in lines[1]
    assert f"{layer} the bytes hash to sha256:" in lines[2] and "'digest did not match'" in lines[2]
    _, lines = pull(f"{share}/{NAME}:multi")
    assert [line.split(" ", 2)[2] for line in lines] == ["answered 404: a child of the index (a platform) is missing"]


def test_the_command_exits_1_on_problems_3_when_unreachable_2_on_a_bad_reference(
    share: str, storage: Storage, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["verify-pull", f"{share}/{NAME}:v1"]) == 0
    storage.delete(layout.tags_list(NAME))
    assert cli.main(["verify-pull", f"{share}/{NAME}:v1"]) == 1
    assert "tags/list answered 404 without a tags list" in capsys.readouterr().out
    assert cli.main(["verify-pull", f"127.0.0.1:1/{NAME}:v1"]) == 3
    assert cli.main(["verify-pull", "127.0.0.1:1/Team/X:v1"]) == 2
    assert "nothing answers at 127.0.0.1:1" in capsys.readouterr().err


def test_references_are_read_as_docker_reads_them() -> None:
    assert parse_target("127.0.0.1:8000/team/app:v1").base == "http://127.0.0.1:8000"  # loopback: plain http
    assert parse_target("images.example.com/team/app:v1").base == "https://images.example.com"
    digested = parse_target("https://cdn.example.com/team/app@sha256:" + "a" * 64)
    assert (digested.name, digested.reference) == ("team/app", "sha256:" + "a" * 64)
    for bad in ("images.example.com", "images.example.com/team/app", "ftp://x/a:b"):
        with pytest.raises(UsageError):
            parse_target(bad)
