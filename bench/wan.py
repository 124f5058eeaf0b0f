"""Push benchmark across a WAN: every contender reaches SeaweedFS through a proxy that applies Storj's gateway rules.

    python3 -m bench.wan [--latency 0.05] [--repeat 1] [--cases many,big,index] [--clients skopeo,docker,oras]
                         [--fills tags,repositories] [--fill-sizes 10,5000]

The proxy (tests/support/fault_proxy.py) sleeps `--latency` seconds before forwarding each request (threads, so
concurrent requests overlap, as on a real link), answers `429 SlowDown` to a second write of one key within a
second (Storj's limit), refuses `If-Match` on writes as Storj's gateway does (storj/storj#7377), and counts
requests by S3 operation. Through one such proxy each, in one run:
- bare: the seed's manual process scripted, one PutObject per object the pull side needs (the blobs, each
  manifest by digest, the tagged one by tag, `v2/index.html`), four at a time; multipart above the part size;
- service: this service, pushed with skopeo, with docker's request shape (one streamed PATCH, no length) and
  with oras/containerd's (one PUT with the body), the last two written here against the spec's requests;
- distribution: the reference registry (Debian's `docker-registry`, CNCF distribution 2.8), pushed with skopeo.
Cases: many small layers, one big layer, a multi-arch index, and a re-tag (the `many` image pushed again under a
new tag to the registry that holds it). Each case starts from an empty bucket. Fills: a bucket filled straight
into the store (tests/support/fill.py) with a repository of `--fill-sizes` tags, or a catalog of that many
repositories; the service, fresh and then warm, is pushed a new 2 x 1 MiB image into that repository, or into a
new one (skopeo), to show a push's cost does not grow with the bucket. Printed: wall time and S3 requests
by operation per push, and ratios to bare and to distribution. Timings are never asserted in tests; request
counts are (tests/integration/test_request_counts.py).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
from boto3.s3.transfer import TransferConfig

from app.settings import Settings
from app.storage.s3 import S3Storage
from bench.images import BenchImage, MiB, write_image, write_index
from bench.servers import Registry, start_reference, start_service
from tests.support.fault_proxy import FaultProxy, storj_rules
from tests.support.fill import NAME as FILL_NAME
from tests.support.fill import WRITERS as FILL_WRITERS
from tests.support.fill import fill_catalog, fill_repository
from tests.support.seaweed import S3Server, start_seaweed
from tests.support.tools import require_tool

PART_SIZE = 64 * MiB
CONCURRENCY = 4
BARE_WORKERS = 4  # the seed's script: four uploads at a time
PUSH_TIMEOUT_S = 1800
QUIET = {"REGISTRY_GC_WATCH_SECONDS": "300"}  # a replica's background look for gc runs is not a push's cost
OPERATIONS = ("PutObject", "UploadPart", "CopyObject", "HeadObject", "GetObject", "ListObjectsV2", "DeleteObject")


@dataclass(frozen=True)
class Case:
    key: str
    title: str
    build: Callable[[Path, int], BenchImage]


CASES = {
    "many": Case("many", "16 x 1 MiB layers", lambda d, seed: write_image(d, "v1", seed, [MiB] * 16)),
    "big": Case("big", "1 x 512 MiB layer", lambda d, seed: write_image(d, "v1", seed, [512 * MiB])),
    "index": Case(
        "index", "index of 3 images x 4 x 1 MiB", lambda d, seed: write_index(d, "v1", seed, [MiB] * 4, ARCHES)
    ),
}
ARCHES = ["amd64", "arm64", "ppc64le"]
FILLS = ("tags", "repositories")


@dataclass
class Sample:
    seconds: float
    operations: dict[str, int]
    errors: int = 0

    @property
    def requests(self) -> int:
        return sum(self.operations.values())


@dataclass
class Results:
    samples: dict[tuple[str, str], list[Sample]] = field(default_factory=dict)

    def add(self, row: str, contender: str, sample: Sample) -> None:
        self.samples.setdefault((row, contender), []).append(sample)

    def median(self, row: str, contender: str) -> Sample | None:
        samples = self.samples.get((row, contender))
        if not samples:
            return None
        seconds = statistics.median(s.seconds for s in samples)
        closest = min(samples, key=lambda s: abs(s.seconds - seconds))
        return Sample(seconds, closest.operations, sum(s.errors for s in samples))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    require_tool("skopeo")
    workdir = Path(tempfile.mkdtemp(prefix="storj-registry-wan-", dir=args.workdir))
    s3 = start_seaweed(workdir / "seaweed")
    results = Results()
    try:
        for repeat in range(args.repeat):
            for number, key in enumerate(filter(None, args.cases.split(","))):
                run_case(s3, workdir / f"r{repeat}-{key}", CASES[key], (repeat * 10 + number) * 1000, args, results)
            for kind in filter(None, args.fills.split(",")):
                for size in map(int, args.fill_sizes.split(",")):
                    run_fill(s3, workdir / f"r{repeat}-{kind}-{size}", kind, size, args, results)
            print_table(args, results, f"after {repeat + 1} of {args.repeat} repeats (medians)")
    finally:
        s3.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if any(s.errors for samples in results.samples.values() for s in samples) else 0


def run_fill(s3: S3Server, workdir: Path, kind: str, size: int, args: Any, results: Results) -> None:
    """A new image pushed (fresh process, then warm) into a repository of `size` tags, or among `size`
    repositories: rows `<kind>@<size> fresh` and `... warm`."""
    bucket = s3.new_bucket(f"fill-{kind[:4]}")
    with StorjRulesProxy(s3, 0.0) as chaining:  # the fill writes documents the way the service will: chained
        direct = S3Storage(_direct_settings(s3, bucket, workdir))
        chained = S3Storage(_direct_settings(s3, bucket, workdir, chaining.endpoint))
        (fill_repository if kind == "tags" else fill_catalog)(direct, chained, size)
    with StorjRulesProxy(s3, args.latency) as proxy:
        service = start_service(s3, bucket, workdir / "service", PART_SIZE, CONCURRENCY, proxy.endpoint, QUIET)
        try:
            proxy.quiet()
            for moment, seed in (("fresh", 1), ("warm", 2)):
                image = write_image(workdir / f"image-{moment}", "v1", seed * 7919 + size, [MiB, MiB])
                name = FILL_NAME if kind == "tags" else f"new/repository-{moment}"
                push = partial(skopeo_push, service, image, f"{name}:{moment}")
                results.add(f"{kind}@{size} {moment}", "service/skopeo", measure(proxy, push))
                time.sleep(1)  # Storj takes a write a second to a key: the tags list was just written
        finally:
            service.stop()
    shutil.rmtree(workdir, ignore_errors=True)


def _direct_settings(s3: S3Server, bucket: str, workdir: Path, endpoint: str | None = None) -> Settings:
    return Settings(
        storage="s3",
        s3_endpoint=endpoint or s3.endpoint,
        s3_bucket=bucket,
        s3_access_key=s3.access_key,
        s3_secret_key=s3.secret_key,
        s3_region=s3.region,
        staging_dir=workdir / "fill-staging",
        s3_max_concurrency=FILL_WRITERS // 4,  # connections for the fill's writer threads
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python3 -m bench.wan", description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.05, help="seconds added before every S3 request")
    parser.add_argument("--repeat", type=int, default=1, help="runs of every case; medians are reported")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of {', '.join(CASES)}")
    parser.add_argument("--clients", default="skopeo,docker,oras", help="how the service is pushed to")
    parser.add_argument("--no-reference", action="store_true", help="skip distribution 2.8")
    parser.add_argument("--workdir", default=None, help="where images, staging and the store go")
    parser.add_argument("--fills", default=",".join(FILLS), help="pushes into a filled bucket: tags, repositories")
    parser.add_argument("--fill-sizes", default="10,5000", help="tags of the repository, or repositories")
    args = parser.parse_args(argv)
    unknown = set(filter(None, args.cases.split(","))) - set(CASES) | set(filter(None, args.fills.split(","))) - set(
        FILLS
    )
    if unknown:
        parser.error(f"unknown cases or fills {sorted(unknown)}")
    return args


def run_case(s3: S3Server, workdir: Path, case: Case, seed: int, args: Any, results: Results) -> None:
    image = case.build(workdir / "image", seed)
    bucket = s3.new_bucket(f"bare-{case.key}")
    with StorjRulesProxy(s3, args.latency) as proxy:
        results.add(case.key, "bare", measure(proxy, partial(bare_upload, s3, proxy, bucket, image, "bench/app")))
    for client in args.clients.split(","):
        with StorjRulesProxy(s3, args.latency) as proxy:
            bucket = s3.new_bucket("svc")
            service = start_service(s3, bucket, workdir / client, PART_SIZE, CONCURRENCY, proxy.endpoint, QUIET)
            try:
                proxy.quiet()  # start-up work (v2/index.html, the catalog, the location records) is not a push
                push = partial(PUSHERS[client], service, image)
                results.add(case.key, f"service/{client}", measure(proxy, partial(push, "bench/app:v1")))
                if case.key == "many" and client == "skopeo":
                    retag = partial(skopeo_push, service, image, "bench/app:v2")
                    results.add("retag", "service/skopeo", measure(proxy, retag))
            finally:
                service.stop()
    if not args.no_reference:
        with StorjRulesProxy(s3, args.latency) as proxy:
            reference = start_reference(s3, s3.new_bucket("ref"), workdir / "reference", proxy.endpoint)
            try:
                proxy.quiet()
                push = partial(skopeo_push, reference, image)
                results.add(case.key, "distribution", measure(proxy, partial(push, "bench/app:v1")))
                if case.key == "many":
                    results.add("retag", "distribution", measure(proxy, partial(push, "bench/app:v2")))
            finally:
                reference.stop()
    if case.key == "many":
        results.add("retag", "bare", Sample(0.0, {"PutObject": 1}))  # the tag object alone, as a floor
    shutil.rmtree(workdir, ignore_errors=True)
    rows = (case.key, "retag") if case.key == "many" else (case.key,)
    for (row, contender), samples in results.samples.items():
        if row in rows and samples:
            sample = samples[-1]
            print(f"  {row:<6} {contender:<18} {sample.seconds:7.2f} s {sample.requests:5d} requests", flush=True)


class StorjRulesProxy(FaultProxy):
    """A proxy with Storj's rules (per-key write limit, no If-Match) and the latency of a WAN round trip."""

    def __init__(self, s3: S3Server, latency: float) -> None:
        super().__init__(s3.endpoint, latency=latency)
        for rule in storj_rules():
            self.add(rule)


def measure(proxy: FaultProxy, push: Callable[[], int]) -> Sample:
    proxy.quiet()
    with proxy.lock:
        proxy.seen.clear()
    started = time.monotonic()
    errors = push()
    seconds = time.monotonic() - started
    proxy.quiet()
    return Sample(seconds, proxy.operations(), errors)


# --- the contenders -------------------------------------------------------------------------------------------


def bare_upload(s3: S3Server, proxy: FaultProxy, bucket: str, image: BenchImage, name: str) -> int:
    """One PutObject per object the pull side needs, four at a time (multipart for blobs above the part size)."""
    client = S3Server(proxy.endpoint, s3.access_key, s3.secret_key, s3.region).client()
    transfer = TransferConfig(multipart_threshold=PART_SIZE, multipart_chunksize=PART_SIZE, max_concurrency=CONCURRENCY)
    files = [(blob.path, f"v2/{name}/blobs/{blob.digest}") for blob in image.blobs]
    files += [(m.blob.path, f"v2/{name}/manifests/{m.blob.digest}") for m in image.manifests]
    files.append((image.manifests[-1].blob.path, f"v2/{name}/manifests/{image.tag}"))

    def upload(job: tuple[Path, str]) -> None:
        client.upload_file(str(job[0]), bucket, job[1], Config=transfer)

    with ThreadPoolExecutor(BARE_WORKERS) as pool:
        list(pool.map(upload, files))
        client.put_object(Bucket=bucket, Key="v2/index.html", Body=b"", ContentType="text/html")
    return 0


def skopeo_push(registry: Registry, image: BenchImage, reference: str) -> int:
    command = ["skopeo", "copy", "--quiet", "--all", "--preserve-digests", "--dest-tls-verify=false"]
    command += [image.ref, f"docker://{registry.address}/{reference}"]
    result = subprocess.run(command, capture_output=True, timeout=PUSH_TIMEOUT_S)
    if result.returncode != 0:
        print(f"  !! skopeo failed: {result.stderr.decode(errors='replace')[-500:]}", flush=True)
        return 1
    return 0


def docker_style_push(registry: Registry, image: BenchImage, reference: str) -> int:
    """docker's shape: HEAD, POST, one streamed PATCH (chunked, no length), empty PUT, HEAD again; 4 at a time."""

    def one(client: httpx.Client, name: str, path: Path, digest: str) -> None:
        if client.head(f"/v2/{name}/blobs/{digest}").status_code == 200:
            return
        location = client.post(f"/v2/{name}/blobs/uploads/").headers["Location"]
        patched = client.patch(location, content=_chunks(path))
        patched.raise_for_status()
        client.put(patched.headers["Location"], params={"digest": digest}).raise_for_status()
        client.head(f"/v2/{name}/blobs/{digest}").raise_for_status()

    return _push_with(registry, image, reference, one)


def monolithic_push(registry: Registry, image: BenchImage, reference: str) -> int:
    """oras's and containerd's shape: HEAD, POST, one PUT with the whole body; 4 at a time."""

    def one(client: httpx.Client, name: str, path: Path, digest: str) -> None:
        if client.head(f"/v2/{name}/blobs/{digest}").status_code == 200:
            return
        location = client.post(f"/v2/{name}/blobs/uploads/").headers["Location"]
        headers = {"Content-Length": str(path.stat().st_size), "Content-Type": "application/octet-stream"}
        client.put(location, params={"digest": digest}, content=_chunks(path), headers=headers).raise_for_status()

    return _push_with(registry, image, reference, one)


def _push_with(registry: Registry, image: BenchImage, reference: str, one: Callable[..., None]) -> int:
    name, tag = reference.rsplit(":", 1)
    with httpx.Client(base_url=f"http://{registry.address}", timeout=PUSH_TIMEOUT_S) as client:
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            list(pool.map(lambda blob: one(client, name, blob.path, blob.digest), image.blobs))
        for number, manifest in enumerate(image.manifests):
            last = number == len(image.manifests) - 1
            ref = tag if last else manifest.blob.digest
            headers = {"Content-Type": manifest.media_type}
            response = client.put(
                f"/v2/{name}/manifests/{ref}", content=manifest.blob.path.read_bytes(), headers=headers
            )
            if response.status_code != 201:
                print(f"  !! manifest push failed: {response.status_code} {response.text[:300]}", flush=True)
                return 1
    return 0


def _chunks(path: Path) -> Any:
    with path.open("rb") as handle:
        while chunk := handle.read(MiB):
            yield chunk


PUSHERS: dict[str, Callable[[Registry, BenchImage, str], int]] = {
    "skopeo": skopeo_push,
    "docker": docker_style_push,
    "oras": monolithic_push,
}


# --- the report -----------------------------------------------------------------------------------------------


def print_table(args: Any, results: Results, heading: str) -> None:
    print(f"\n{heading}; {args.latency * 1000:.0f} ms per S3 request, Storj's per-key write limit\n")
    print(
        "| case | contender | s | S3 requests | " + " | ".join(OPERATIONS) + " | time / bare | requests / bare "
        "| time / distribution | requests / distribution |"
    )
    print("|---" * (8 + len(OPERATIONS)) + "|")
    rows = [*filter(None, args.cases.split(",")), "retag"]
    rows += [row for row, _ in sorted(results.samples) if "@" in row and row not in rows]
    for row in dict.fromkeys(rows):
        bare, reference = results.median(row, "bare"), results.median(row, "distribution")
        for (sample_row, contender), _ in sorted(results.samples.items()):
            if sample_row != row:
                continue
            sample = results.median(row, contender)
            assert sample is not None
            title = CASES[row].title if row in CASES else "re-tag of `many`" if row == "retag" else row
            cells = [title, contender, f"{sample.seconds:.2f}", str(sample.requests)]
            cells += [str(sample.operations.get(op, 0)) for op in OPERATIONS]
            cells += [_ratio(sample.seconds, bare.seconds if bare else None)]
            cells += [_ratio(sample.requests, bare.requests if bare else None)]
            cells += [_ratio(sample.seconds, reference.seconds if reference else None)]
            cells += [_ratio(sample.requests, reference.requests if reference else None)]
            errors = f" ({sample.errors} errors)" if sample.errors else ""
            print("| " + " | ".join(cells) + f" |{errors}")
    sys.stdout.flush()


def _ratio(value: float, other: float | None) -> str:
    return "-" if not other else f"{value / other:.2f}"


if __name__ == "__main__":
    sys.exit(main())
