"""Prometheus metrics of the service, served at `/metrics`."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECEIVED_BYTES = Counter("registry_received_bytes", "Blob bytes received from clients (upload bodies)", ["repository"])
COMMITTED_BLOBS = Counter("registry_committed_blobs", "Blobs committed to storage", ["how"])
COMMIT_SECONDS = Histogram(
    "registry_commit_seconds",
    "Time to publish a verified blob to storage",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
ACTIVE_UPLOADS = Gauge("registry_active_uploads", "Upload requests streaming a body right now")
