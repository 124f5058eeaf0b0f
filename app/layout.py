"""The static bucket layout: the only module that spells object keys.

Every key a registry client would GET is an object at the same path (see docs/storj.md), so a static file
server over the bucket (Storj linksharing) answers pulls without this service. Callers pass validated names,
tags and digests (see `app.registry.references`); this module never sees raw client input.
"""

from __future__ import annotations

import hashlib

MANIFEST_CACHE_IMMUTABLE = "public, max-age=31536000, immutable"
MUTABLE_CACHE = "no-cache"

INDEX_HTML = "v2/index.html"
CATALOG = "v2/_catalog"
JSON = "application/json"
HTML = "text/html"
TEXT = "text/plain"
OCTET_STREAM = "application/octet-stream"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"

# The folders of a repository's keys (`v2/<name>/<folder>/...`), and the objects at the top of `v2/` that a
# repository name could otherwise shadow: `app.registry.references` refuses names that would reach into them.
REPOSITORY_FOLDERS = ("blobs", "manifests", "tags", "referrers")
TOP_LEVEL_OBJECTS = (INDEX_HTML.removeprefix("v2/"),)


def blob(name: str, digest: str) -> str:
    return f"v2/{name}/blobs/{digest}"


def manifest(name: str, reference: str) -> str:
    """Key of a manifest under a tag or a digest (both live side by side)."""
    return f"v2/{name}/manifests/{reference}"


def blobs_dir(name: str) -> str:
    return f"v2/{name}/blobs/"


def manifests_dir(name: str) -> str:
    return f"v2/{name}/manifests/"


def tags_list(name: str) -> str:
    return f"v2/{name}/tags/list"


def referrers(name: str, subject_digest: str) -> str:
    return f"v2/{name}/referrers/{subject_digest}"


def referrer_entries(name: str, subject_digest: str) -> str:
    """Prefix of the entries, one per referrer, from which the subject's referrers index is rebuilt."""
    return f"v2/{name}/referrers/{subject_digest}.d/"


def referrer_entry(name: str, subject_digest: str, referrer_digest: str) -> str:
    """One referrer of a subject: its descriptor, written once (see app/registry/documents.py)."""
    return referrer_entries(name, subject_digest) + referrer_digest


CATALOG_ENTRIES = "v2/_catalog.d/"


def catalog_entry(name: str) -> str:
    """One repository's entry, from which `v2/_catalog` is rebuilt (see app/registry/documents.py).

    `_catalog.d` cannot be a repository name; the final `/_entry` keeps nested names (`a` and `a/b`) from being
    a file and a directory at once in the filesystem store.
    """
    return f"{CATALOG_ENTRIES}{name}/_entry"


def name_from_catalog_entry(key: str) -> str | None:
    if key.startswith(CATALOG_ENTRIES) and key.endswith("/_entry"):
        return key[len(CATALOG_ENTRIES) : -len("/_entry")]
    return None


BLOB_LOCATIONS = "v2/_blobs/"


def blob_location(digest: str) -> str:
    """Record naming one repository that holds blob `digest` (layer sharing, docs/operations.md "Shared layers").

    `_blobs` cannot be a repository name (names start with `[a-z0-9]`), so the key never collides with one.
    """
    return f"{BLOB_LOCATIONS}{digest}"


SUMMARIES = "v2/_summaries/"


def blob_summary(name: str) -> str:
    """The digest prefixes of a big repository's blobs (app/registry/blob_summaries.py). `_summaries` cannot be a
    repository name; the final `/_blobs` keeps nested names from being a file and a directory at once."""
    return f"{SUMMARIES}{name}/_blobs"


PAGE = "index.html"
PAGE_ASSETS = "assets/"


def page_asset(filename: str) -> str:
    """A content-hashed file of the catalog page (app/registry/catalog_page.py), beside `index.html` at the root.

    The page's relative URLs are these keys, so the page works wherever linksharing (or the service) roots it.
    """
    return f"{PAGE_ASSETS}{filename}"


def staged_upload(upload_id: str) -> str:
    """Where an upload session's bytes are assembled before its digest is known (see app/registry/parts.py).

    `_uploads` cannot be a repository name either; the object exists only between the verified completion of the
    multipart upload and its copy to the blob's key.
    """
    return f"v2/_uploads/{upload_id}"


def capability_probe(token: str) -> str:
    """The key a process probes If-Match on: written only by a store that ignores If-Match, and deleted at once.

    Each process probes its own key: replicas starting together would otherwise write one key within a second,
    which Storj throttles (SlowDown).
    """
    return f"v2/_probe/if-match-{token}"


VERSIONS = "v2/_versions/"
VERSION_DIGITS = 12


def document_versions(document: str) -> str:
    """Prefix of the numbered versions of a derived document (`tags/list`, `_catalog`), each written create-only:
    where a store does not honour If-Match, the chain of versions says which write came after which (see
    app/registry/documents.py). Not a repository: `_versions` cannot be a repository name."""
    return f"{VERSIONS}{document.removeprefix('v2/')}/"


def document_version(document: str, number: int) -> str:
    return f"{document_versions(document)}{number:0{VERSION_DIGITS}d}"


def version_number(document: str, key: str) -> int | None:
    """The number of a version key of `document`, or None for another key."""
    number = key.removeprefix(document_versions(document))
    return int(number) if len(number) == VERSION_DIGITS and number.isdigit() else None


MULTIPART_RECORDS = "v2/_multipart/"


def multipart_record(writer: str, key: str) -> str:
    """Says that `writer` (a gc participant) is sending a multipart upload to `key`, from before the upload begins
    until it completes or aborts it: gc aborts at once the uploads of a writer that died (app/tools/gc.py)."""
    return f"{MULTIPART_RECORDS}{writer}/{multipart_record_name(key)}"


def multipart_record_name(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:32]


GC_STATE = "v2/_gc/"
GC_RUN = f"{GC_STATE}run"  # the announcement of a `gc --delete` run


def gc_state(run_id: str) -> str:
    """Everything one `gc --delete` run writes besides `GC_RUN` (see app/registry/gc_runs.py for the protocol).

    `_gc` cannot be a repository name either.
    """
    return f"{GC_STATE}{run_id}/"


def gc_candidates(run_id: str) -> str:
    """The keys the run may delete: every service replica reads them once the run has marked them."""
    return f"{gc_state(run_id)}candidates"


def gc_condemned(run_id: str) -> str:
    """The candidates the run is about to delete, written after its grace and before it reads the claims."""
    return f"{gc_state(run_id)}condemned"


GC_PARTICIPANTS = f"{GC_STATE}participants/"


def gc_participant(participant: str) -> str:
    """A writer (a replica, `copy`, `sync`) that heeds gc runs, rewritten while it runs: gc waits for what it
    acknowledges (app/registry/gc_runs.py)."""
    return GC_PARTICIPANTS + participant


def gc_acks(run_id: str, phase: str) -> str:
    return f"{gc_state(run_id)}acks/{phase}/"


def gc_ack(run_id: str, phase: str, participant: str) -> str:
    """Participant `participant` has seen the run in `phase` and is ready for the next."""
    return gc_acks(run_id, phase) + participant


def gc_claims(run_id: str) -> str:
    return f"{gc_state(run_id)}claims/"


def gc_claim(run_id: str, key: str) -> str:
    """A push relies on candidate `key`: the run must not delete it."""
    return gc_claims(run_id) + key


QUARANTINE = "v2/_quarantine/"


def quarantined(key: str) -> str:
    """Where `fsck --blobs --repair` moves a blob whose bytes do not hash to its digest, out of clients' way.

    The blob's own key is then free, so the next push of that digest writes it again (blob writes are create-only).
    `_quarantine` cannot be a repository name either.
    """
    return QUARANTINE + key.removeprefix("v2/")
