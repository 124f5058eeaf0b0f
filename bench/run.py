"""Push benchmark: this service against the reference registry and the raw S3 upload, on one machine.

    python3 -m bench.run [--repeat N] [--big] [--cases big,many,concurrent]

Each repeat starts from empty storage: a fresh SeaweedFS bucket for each contender, both registries restarted,
new image seeds (so neither skopeo's blob-info cache nor a registry's dedup can skip an upload). Every case is
pushed with skopeo (`--preserve-digests`, one process per image, all images of a case at once) to this service
and to the reference, and the same blobs are uploaded straight to SeaweedFS with boto3 (same part size and
concurrency as the service) for the raw limit. The order of the three alternates between repeats. Medians are
printed at the end: the machine is shared and noisy, so single runs mean little.
"""

from __future__ import annotations

import argparse
import os
import resource
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

from boto3.s3.transfer import TransferConfig

from bench.images import BenchImage, MiB, write_image
from bench.servers import Registry, start_reference, start_service
from tests.support.seaweed import S3Server, start_seaweed
from tests.support.tools import require_tool

PUSH_TIMEOUT_S = 900
COMMIT_METRIC = "registry_commit_seconds_sum"
CPU_COLUMNS = ("service", "reference", "seaweedfs", "skopeo", "boto3")
RAW_WORKERS = 8  # blobs in flight for the raw upload: one per concurrent image, like skopeo's parallel layers


@dataclass(frozen=True)
class Case:
    key: str
    title: str
    layers: list[list[int]]  # per image, its layer sizes
    reference: bool = True
    max_vs_reference: float | None = None  # the targets (floors): service time / reference time
    max_vs_raw: float | None = None  # service time / raw upload time


CASES = {
    "big": Case("big", "1 x 512 MiB layer", [[512 * MiB]], max_vs_reference=0.5, max_vs_raw=1.3),
    "many": Case("many", "50 x 1 MiB layers", [[MiB] * 50], max_vs_reference=0.7),
    "concurrent": Case("concurrent", "8 images x 128 MiB, at once", [[128 * MiB]] * 8, max_vs_raw=1 / 0.8),
}
BIG_CASE = Case("huge", "1 x 2 GiB layer (RSS check)", [[2048 * MiB]], reference=False)


@dataclass
class Sample:
    seconds: float
    errors: int = 0
    peak_rss: int | None = None
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds by process: where a 2-core box spends them
    commit_seconds: float | None = None  # service: time spent publishing blobs after their digest was verified


class CpuMeter:
    """CPU seconds (user + system) used by the registry, SeaweedFS, the clients and this process meanwhile."""

    def __init__(self, s3: S3Server, registry: Registry | None) -> None:
        self.pids = {"seaweedfs": s3.process.pid} if s3.process else {}
        if registry is not None:
            self.pids[registry.label] = registry.process.pid
        self.start = self._read()

    def _read(self) -> dict[str, float]:
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        own = resource.getrusage(resource.RUSAGE_SELF)
        totals = {name: process_cpu(pid) for name, pid in self.pids.items()}
        return totals | {"skopeo": children.ru_utime + children.ru_stime, "boto3": own.ru_utime + own.ru_stime}

    def used(self) -> dict[str, float]:
        end = self._read()
        return {name: end[name] - self.start[name] for name in end}


def process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Results:
    samples: dict[tuple[str, str], list[Sample]] = field(default_factory=dict)

    def add(self, case: str, contender: str, sample: Sample) -> None:
        self.samples.setdefault((case, contender), []).append(sample)

    def median(self, case: str, contender: str, attr: str = "seconds") -> float | None:
        values = [getattr(s, attr) for s in self.samples.get((case, contender), []) if getattr(s, attr) is not None]
        return statistics.median(values) if values else None

    def errors(self, case: str) -> int:
        return sum(s.errors for (c, _), samples in self.samples.items() if c == case for s in samples)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cases = [CASES[key] for key in args.cases.split(",")] + ([BIG_CASE] if args.big else [])
    require_tool("skopeo")
    workdir = Path(tempfile.mkdtemp(prefix="storj-registry-bench-", dir=args.workdir))
    results = Results()
    s3 = start_seaweed(workdir / "seaweed")
    try:
        for repeat in range(args.repeat):
            run_repeat(s3, workdir / f"r{repeat}", cases, repeat, args, results)
            print_table(cases, results, f"after {repeat + 1} of {args.repeat} repeats (medians)")
    finally:
        s3.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if any(results.errors(key) for key in [*(case.key for case in cases), "dangling"]) else 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python3 -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs of every case; medians are reported")
    parser.add_argument("--big", action="store_true", help="also push a 2 GiB layer (service and raw only)")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of {', '.join(CASES)}")
    parser.add_argument("--part-size", type=int, default=64 * MiB, help="multipart part size, service and raw")
    parser.add_argument("--concurrency", type=int, default=4, help="parts in flight per blob, service and raw")
    parser.add_argument("--workdir", default=None, help="where images and staging go (default: the temp dir)")
    args = parser.parse_args(argv)
    unknown = set(args.cases.split(",")) - set(CASES)
    if unknown or args.repeat < 1:
        parser.error(f"unknown cases {sorted(unknown)}" if unknown else "--repeat must be at least 1")
    return args


def run_repeat(s3: S3Server, workdir: Path, cases: list[Case], repeat: int, args: Any, results: Results) -> None:
    """One repeat: fresh buckets and registries, new images, every case against every contender.

    The service is restarted for each case, so that its peak RSS belongs to that case alone.
    """
    buckets = {name: f"bench-{name}-{repeat}" for name in ("service", "reference", "raw")}
    for bucket in buckets.values():
        s3.create_bucket(bucket)
    reference = start_reference(s3, buckets["reference"], workdir / "reference")
    transfer = TransferConfig(
        multipart_threshold=args.part_size, multipart_chunksize=args.part_size, max_concurrency=args.concurrency
    )
    try:
        for number, case in enumerate(cases):
            images = make_images(workdir / "images" / case.key, case, seed=(repeat * 100 + number) * 1000)
            service = start_service(s3, buckets["service"], workdir / "service", args.part_size, args.concurrency)
            contenders: dict[str, Callable[[], Sample]] = {
                "service": partial(push_all, service, images, case.key, s3, True),
                "raw": partial(upload_raw, s3, buckets["raw"], images, case.key, transfer),
            }
            if case.reference:
                contenders["reference"] = partial(push_all, reference, images, case.key, s3, False)
            order = list(contenders) if repeat % 2 == 0 else list(reversed(contenders))
            try:
                for contender in order:
                    sample = contenders[contender]()
                    results.add(case.key, contender, sample)
                    report(repeat, case, contender, sample)
            finally:
                service.stop()
            shutil.rmtree(workdir / "images" / case.key)
        dangling = s3.admin.list_multipart_uploads(Bucket=buckets["service"]).get("Uploads", [])
        if dangling:
            print(f"  !! {len(dangling)} multipart uploads left behind in the service's bucket", flush=True)
            results.add("dangling", "service", Sample(0.0, errors=len(dangling)))
    finally:
        reference.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def report(repeat: int, case: Case, contender: str, sample: Sample) -> None:
    rss = f"  peak RSS {sample.peak_rss / MiB:.0f} MiB" if sample.peak_rss else ""
    print(f"  repeat {repeat + 1} {case.key:<10} {contender:<9} {sample.seconds:7.2f} s{rss}", flush=True)


def make_images(directory: Path, case: Case, seed: int) -> list[BenchImage]:
    return [write_image(directory / f"image{i}", "v1", seed + i * 100, sizes) for i, sizes in enumerate(case.layers)]


def push_all(registry: Registry, images: list[BenchImage], case: str, s3_server: S3Server, check: bool) -> Sample:
    """skopeo-push every image at once; with `check`, also verify the bucket holds every blob at its size."""
    registry.reset_peak_rss()
    commits_before = registry.metric(COMMIT_METRIC)
    meter = CpuMeter(s3_server, registry)
    started = time.monotonic()
    processes = [
        subprocess.Popen(
            skopeo_push(image, f"{registry.address}/bench/{case}{i}"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for i, image in enumerate(images)
    ]
    errors = 0
    for process in processes:
        _, stderr = process.communicate(timeout=PUSH_TIMEOUT_S)
        if process.returncode != 0:
            errors += 1
            print(f"  !! {registry.label}: skopeo failed: {stderr.decode(errors='replace')[-500:]}", flush=True)
    seconds = time.monotonic() - started
    peak = registry.peak_rss() if registry.label == "service" else None
    cpu = meter.used()
    commits_after = registry.metric(COMMIT_METRIC)
    committing = commits_after - commits_before if commits_after is not None and commits_before is not None else None
    if check:
        errors += missing_blobs(s3_server, registry.bucket, images, case)
    del cpu["boto3"]
    return Sample(seconds, errors, peak, cpu, committing)


def skopeo_push(image: BenchImage, destination: str) -> list[str]:
    return [
        "skopeo",
        "copy",
        "--quiet",
        "--preserve-digests",
        "--dest-tls-verify=false",
        image.ref,
        f"docker://{destination}:{image.tag}",
    ]


def missing_blobs(s3: S3Server, bucket: str, images: list[BenchImage], case: str) -> int:
    """Blobs the service should hold after the push but does not (or not at their size)."""
    missing = 0
    for i, image in enumerate(images):
        for blob in image.blobs:
            key = f"v2/bench/{case}{i}/blobs/{blob.digest}"
            try:
                size = s3.admin.head_object(Bucket=bucket, Key=key)["ContentLength"]
            except Exception:
                size = None
            if size != blob.size:
                print(f"  !! service bucket lacks {key} at size {blob.size} (found {size})", flush=True)
                missing += 1
    return missing


def upload_raw(s3: S3Server, bucket: str, images: list[BenchImage], case: str, transfer: TransferConfig) -> Sample:
    """The storage limit: the same blobs uploaded straight to SeaweedFS by boto3, several at once."""
    client = s3.client()
    jobs = [(blob, f"raw/{case}{i}/{blob.digest}") for i, image in enumerate(images) for blob in image.blobs]
    meter = CpuMeter(s3, None)
    started = time.monotonic()
    with ThreadPoolExecutor(RAW_WORKERS) as pool:
        list(pool.map(lambda job: client.upload_file(str(job[0].path), bucket, job[1], Config=transfer), jobs))
    seconds = time.monotonic() - started
    cpu = meter.used()
    del cpu["skopeo"]
    return Sample(seconds, cpu=cpu)


def print_table(cases: list[Case], results: Results, heading: str) -> None:
    print(f"\n{heading}")
    header = "| case | MiB | service s | reference s | raw s | service/reference | service/raw | service MiB/s "
    header += "| raw MiB/s | service peak RSS MiB | service commit s | errors | targets |"
    print(header)
    print("|---" * 13 + "|")
    for case in cases:
        print(table_row(case, results))
    print_cpu_table(cases, results)
    sys.stdout.flush()


def print_cpu_table(cases: list[Case], results: Results) -> None:
    """Median CPU seconds per process during each contender's run of each case."""
    print("\n| case | contender | " + " | ".join(f"{name} CPU s" for name in CPU_COLUMNS) + " | total CPU s |")
    print("|---|---|" + "---|" * (len(CPU_COLUMNS) + 1))
    for case in cases:
        for contender in ("service", "reference", "raw"):
            samples = results.samples.get((case.key, contender), [])
            if not samples:
                continue
            medians = [statistics.median(s.cpu.get(name, 0.0) for s in samples) for name in CPU_COLUMNS]
            cells = [case.title, contender, *(f"{value:.2f}" for value in medians), f"{sum(medians):.2f}"]
            print("| " + " | ".join(cells) + " |")


def table_row(case: Case, results: Results) -> str:
    size = sum(sum(sizes) for sizes in case.layers) / MiB
    service, reference, raw = (results.median(case.key, name) for name in ("service", "reference", "raw"))
    rss = results.median(case.key, "service", "peak_rss")
    committing = results.median(case.key, "service", "commit_seconds")
    cells = [
        case.title,
        f"{size:.0f}",
        _fmt(service),
        _fmt(reference),
        _fmt(raw),
        _ratio(service, reference),
        _ratio(service, raw),
        _fmt(size / service if service else None, 0),
        _fmt(size / raw if raw else None, 0),
        _fmt(rss / MiB if rss else None, 0),
        _fmt(committing),
        str(results.errors(case.key)),
        targets(case, service, reference, raw),
    ]
    return "| " + " | ".join(cells) + " |"


def targets(case: Case, service: float | None, reference: float | None, raw: float | None) -> str:
    """Which of the issue's targets the medians meet (RSS is judged by eye: under 200 MiB, flat in size)."""
    verdicts = []
    for label, limit, other in (("ref", case.max_vs_reference, reference), ("raw", case.max_vs_raw, raw)):
        if limit is not None and service and other:
            verdicts.append(f"{label} <= {limit:.2f}: {'met' if service / other <= limit else 'MISSED'}")
    return "; ".join(verdicts) or "-"


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _ratio(numerator: float | None, denominator: float | None) -> str:
    return "-" if not numerator or not denominator else f"{numerator / denominator:.2f}"


if __name__ == "__main__":
    sys.exit(main())
