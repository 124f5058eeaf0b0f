"""`storj-registry sync CONFIG.yaml`: tag selection, several destinations, idempotence counted in storage writes."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from app import layout
from app.mirror.jobs import UsageError
from app.mirror.progress import Quiet
from app.mirror.sync import Mirror, load_config, run_sync, select_tags
from app.registry import build_registry
from app.settings import Settings
from app.storage import Storage, open_storage
from tests.mirror.conftest import Filled, Run, pulled_digest
from tests.support.images import make_layer, write_image

WRITES = {"put_bytes", "put_file", "copy", "delete", "begin_multipart", "put_part", "complete_multipart"}


class CountingStorage:
    """The real store, with every call that writes counted by method (but a participant's own presence, which
    every process running a registry writes and removes: app/registry/gc_runs.py)."""

    def __init__(self, inner: Storage) -> None:
        self.inner = inner
        self.writes: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.inner, name)
        if name not in WRITES:
            return attribute

        def counted(*args: Any, **kwargs: Any) -> Any:
            if not (args and str(args[0]).startswith(layout.GC_PARTICIPANTS)):
                self.writes[name] += 1
            return attribute(*args, **kwargs)

        return counted


def mirror(**fields: Any) -> Mirror:
    return Mirror(source="docker://127.0.0.1:1/team/versions", **fields)


AVAILABLE = ["1.0.0", "1.2.0", "v1.10.1", "2.0.0", "2.1.0-rc1", "latest", "nightly"]


def test_tag_selection() -> None:
    assert select_tags(mirror(tags=["latest"]), AVAILABLE) == ["latest"]
    assert select_tags(mirror(tag_regex=r"^1\."), AVAILABLE) == ["1.0.0", "1.2.0"]
    assert select_tags(mirror(newest=2), AVAILABLE) == ["v1.10.1", "2.0.0"]  # pre-releases and words are no versions
    assert select_tags(mirror(tag_regex="^1", newest=1, tags=["latest"]), AVAILABLE) == ["latest", "1.2.0"]


def test_config_mistakes_name_the_file_and_exit_2(settings: Settings, cli: Callable[..., Run], tmp_path: Path) -> None:
    config = tmp_path / "sync.yaml"
    ok = "mirrors:\n  - {source: 'docker://r.example.com/ok', tags: ['1']}\n"  # the mistakes are on line 3 on
    for mistake, said in (
        ("  - source: docker://r/a\n", ":3: mirrors[1]: choose tags"),
        ("  - source: docker://r/a\n    tags: ['1']\n    colour: blue\n", ":5: mirrors[1].colour: not a key"),
        ("  - source: oci:/tmp/layout\n    tags: ['1']\n", ":3: mirrors[1].destination: oci:/tmp/layout: a local"),
        ("  - source: docker://r/a\n    tag_regex: '('\n", ":4: mirrors[1].tag_regex: not a regular"),
        ("  - source: docker://r/a\n    tags: ['1']\n    destination: Not/Valid\n", ":5: mirrors[1].destination: "),
        ("  - source: docker://r/a\n    newest: many\n", ":4: mirrors[1].newest: "),
    ):
        config.write_text(ok + mistake)
        run = cli(settings, "sync", str(config))
        assert run.status == 2, mistake
        (line,) = [line for line in run.err.splitlines() if "store:" not in line]
        assert line.startswith(f"storj-registry sync: {config}{said}"), (line, config.read_text())
        assert "pydantic" not in line and "Traceback" not in run.err
    config.write_text("mirrors:\n  - source: [unclosed\n")
    broken = cli(settings, "sync", str(config))
    assert broken.status == 2 and f"{config}:3: not valid YAML" in broken.err, broken.err
    with pytest.raises(UsageError, match=r"sync\.yaml"):
        load_config(config)


@pytest.mark.parametrize("settings", ["s3"], indirect=True)
def test_a_second_run_with_nothing_new_makes_no_writes(
    settings: Settings, anonymous: Filled, tmp_path: Path, pull: str
) -> None:
    content = anonymous.content
    config = tmp_path / "sync.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "mirrors": [
                    {"source": f"docker://{anonymous.host}/team/versions", "newest": 2, "tag_regex": "^v?1"},
                    {
                        "source": f"docker://{anonymous.host}/team/app",
                        "tags": ["v1"],
                        "destination": ["a/app", "b/app"],
                    },
                    {"source": f"docker://{anonymous.host}/team/multi", "tags": ["v1"], "destination": "a/multi"},
                ]
            }
        )
    )

    def sync() -> tuple[CountingStorage, list[Any]]:
        storage = CountingStorage(open_storage(settings))

        async def run_it() -> list[Any]:
            async with build_registry(settings, storage=storage).running() as registry:  # type: ignore[arg-type]
                return await run_sync(registry, load_config(config), Quiet())

        return storage, asyncio.run(run_it())

    storage, outcomes = sync()
    assert [(o.destination, o.ok) for o in outcomes] == [
        ("team/versions:1.2.0", True),
        ("team/versions:v1.10.1", True),
        ("a/app:v1", True),
        ("b/app:v1", True),
        ("a/multi:v1", True),
    ]
    assert storage.writes["put_file"] + storage.writes.get("complete_multipart", 0) > 0
    assert pulled_digest(pull, "team/versions:v1.10.1") == content.versions["v1.10.1"]
    assert pulled_digest(pull, "b/app:v1") == content.image.manifest_digest
    assert pulled_digest(pull, "a/multi:v1") == content.index.digest

    again, outcomes = sync()
    assert dict(again.writes) == {}
    assert all(o.ok and o.tally.writes == 0 for o in outcomes)


@pytest.mark.parametrize("settings", ["filesystem"], indirect=True)
def test_summary_and_exit_status_when_one_source_fails(
    settings: Settings, cli: Callable[..., Run], anonymous: Filled, tmp_path: Path
) -> None:
    write_image(tmp_path / "build", "v3", [make_layer(40, 700)])
    config = tmp_path / "sync.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "mirrors": [
                    {"source": f"docker://{anonymous.host}/team/app", "tags": ["v1", "nope"], "referrers": False},
                    {"source": f"oci:{tmp_path / 'build'}", "tags": ["v3"], "destination": "ci/build"},
                    {"source": f"oci:{tmp_path / 'missing'}", "tags": ["v1"], "destination": "ci/missing"},
                ]
            }
        )
    )
    run = cli(settings, "sync", "--json", str(config))
    assert run.status == 1
    jobs = {job["destination"]: job for job in run.json()["jobs"]}
    assert jobs["team/app:v1"]["ok"] and jobs["ci/build:v3"]["ok"]
    assert "not found" in jobs["team/app:nope"]["error"]
    assert "is not a directory" in jobs["ci/missing"]["error"]
    assert run.json()["total"]["failed"] == 2

    plain = cli(settings, "sync", str(config))
    assert plain.status == 1
    assert plain.out.splitlines()[-1].startswith("2 copied, 2 failed;")
