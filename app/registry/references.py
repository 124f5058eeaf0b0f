"""The spec's grammar for repository names, tags and digests.

Everything a client puts in a URL passes through here before it reaches `app.layout`, so no key can leave
the repository's prefix: names are lower-case path components without `.`/`..`, tags and digests have no `/`.
"""

from __future__ import annotations

import hashlib
import re

from app.errors import DigestInvalid, NameInvalid, TagInvalid

_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
NAME_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
TAG_RE = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")
DIGEST_RE = re.compile(r"(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})")
MAX_NAME_LENGTH = 255

ALGORITHMS = {"sha256": hashlib.sha256, "sha512": hashlib.sha512}


def check_name(name: str) -> str:
    if len(name) > MAX_NAME_LENGTH or not NAME_RE.fullmatch(name):
        raise NameInvalid("invalid repository name", detail={"name": name[:300]})
    return name


def check_tag(tag: str) -> str:
    if not TAG_RE.fullmatch(tag):
        raise TagInvalid("invalid tag", detail={"tag": tag[:300]})
    return tag


def check_digest(digest: str) -> str:
    if not DIGEST_RE.fullmatch(digest):
        raise DigestInvalid("invalid digest", detail={"digest": digest[:300]})
    return digest


def is_digest(reference: str) -> bool:
    return ":" in reference


def check_reference(reference: str) -> str:
    """A manifest reference is a tag or a digest; which one is told by the `:`, as tags cannot hold one."""
    return check_digest(reference) if is_digest(reference) else check_tag(reference)


def algorithm_of(digest: str) -> str:
    return digest.split(":", 1)[0]


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def digest_of(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{ALGORITHMS[algorithm](data).hexdigest()}"
