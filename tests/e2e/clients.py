"""Driving the client tools that need no daemon (skopeo, the oras SDK), and reading what the daemons print."""

from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path

import httpx
import oras.client
from prometheus_client.parser import text_string_to_metric_families

from tests.support.tools import require_tool

SKOPEO_TIMEOUT_S = 300


def skopeo(*args: str) -> str:
    """Run skopeo (plain HTTP both ways, no host signature policy needed); stdout, or an assertion with stderr."""
    done = subprocess.run(
        [require_tool("skopeo"), "--insecure-policy", *args],
        capture_output=True,
        text=True,
        timeout=SKOPEO_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, f"skopeo {' '.join(args)} exited {done.returncode}:\n{done.stderr[-4000:]}"
    return done.stdout


def skopeo_copy(source: str, destination: str, *options: str) -> str:
    """`skopeo copy` between transports; returns the digest of the manifest written (via `--digestfile`)."""
    with tempfile.TemporaryDirectory() as scratch:
        digest_file = Path(scratch) / "digest"
        tls = ("--src-tls-verify=false", "--dest-tls-verify=false")
        skopeo("copy", *tls, "--digestfile", str(digest_file), *options, source, destination)
        return digest_file.read_text().strip()


def oras_client(host: str) -> oras.client.OrasClient:
    """The oras SDK against a plain-HTTP registry on `host` (`127.0.0.1:PORT`)."""
    return oras.client.OrasClient(hostname=host, insecure=True)


def docker_digest(output: str) -> str:
    """The manifest digest `docker push`/`docker pull` print (`...digest: sha256:... size: N` / `Digest: ...`)."""
    found = re.findall(r"[Dd]igest: (sha256:[0-9a-f]{64})", output)
    assert found, f"no digest in docker output:\n{output}"
    return found[-1]


def metric(service_url: str, name: str, **labels: str) -> float:
    """One sample of the service's /metrics, e.g. `registry_committed_blobs_total{how=...}` (0 when absent)."""
    text = httpx.get(f"{service_url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(key) == value for key, value in labels.items()):
                return sample.value
    return 0.0
