"""Prometheus metrics of the service, served at `/metrics`."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# No label comes from a client's names: any string can name a repository, so such labels would grow without bound,
# and /metrics is open, so they would tell anyone the names of private repositories.
RECEIVED_BYTES = Counter("registry_received_bytes", "Blob bytes received from clients (upload bodies)")
COMMITTED_BLOBS = Counter("registry_committed_blobs", "Blobs committed to storage", ["how"])
COMMIT_SECONDS = Histogram(
    "registry_commit_seconds",
    "Time to publish a verified blob to storage",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
ACTIVE_UPLOADS = Gauge("registry_active_uploads", "Upload requests streaming a body right now")

# Requests are labelled by the matched route's path template (`/v2/{name:path}/blobs/{digest}`), never by the raw
# path, and by a fixed set of methods: clients cannot grow the number of series.
HTTP_REQUESTS = Counter("registry_http_requests", "HTTP requests answered", ["method", "route", "status"])
HTTP_REQUEST_SECONDS = Histogram(
    "registry_http_request_duration_seconds",
    "Time from the request's arrival to the end of its response",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
FORWARDED = Counter(
    "registry_forwarded_requests",
    "Requests that belonged to another replica (app/cluster/): forwarded, unreachable peer, lost on the way",
    ["outcome"],
)
STORAGE_REQUESTS = Counter(
    "registry_storage_requests",
    "Requests made to the store: S3 requests by operation (retries included), or filesystem backend calls",
    ["operation"],
)
STORAGE_RETRIES = Counter("registry_storage_retries", "S3 request attempts that were retries", ["operation"])
STORAGE_ERRORS = Counter(
    "registry_storage_errors",
    "S3 requests that failed after their retries (absent keys and create-only conflicts excluded)",
    ["operation"],
)
STORAGE_FAULTS = Counter("registry_storage_faults", "Client requests answered 503 because the storage failed")

# Events (app/events), labelled by the configured endpoint's name: a bounded set.
EVENTS_SENT = Counter("registry_events_sent", "Events a receiver accepted", ["endpoint"])
EVENTS_DROPPED = Counter(
    "registry_events_dropped", "Events dropped because the endpoint's queue was full", ["endpoint"]
)
EVENTS_FAILURES = Counter(
    "registry_events_delivery_failures",
    "Failed deliveries (refused, timed out, unreachable), retried",
    ["endpoint"],
)
EVENTS_PENDING = Gauge("registry_events_pending", "Events waiting for delivery", ["endpoint"])
