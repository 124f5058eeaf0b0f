"""The spec's grammar for repository names, tags and digests.

Everything a client puts in a URL passes through here before it reaches `app.layout`, so no key can leave
the repository's prefix: names are lower-case path components without `.`/`..`, tags and digests have no `/`.

The grammar alone would still let one repository's keys land inside another's: `victim/tags/list` stores its
blobs under `v2/victim/tags/list/`, where `victim`'s tags list is, and `index.html` under the `/v2/` page. A
folder and an object at one path cannot coexist on the filesystem store, and a static server cannot tell them
apart either, so such names are refused too (see `name_overlap`).
"""

from __future__ import annotations

import hashlib
import re

from app import layout
from app.errors import DigestInvalid, NameDenied, TagInvalid

_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
NAME_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
TAG_RE = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")
DIGEST_RE = re.compile(r"(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})")
MAX_NAME_LENGTH = 255

ALGORITHMS = {"sha256": hashlib.sha256, "sha512": hashlib.sha512}

# The filesystem store keeps each object's metadata at `.meta/<key>.json`: a name must not reach into those either.
_SIDECAR_SUFFIX = ".json"
_TOP_LEVEL = {top + suffix for top in layout.TOP_LEVEL_OBJECTS for suffix in ("", _SIDECAR_SUFFIX)}


def name_overlap(name: str) -> str | None:
    """Why the keys of repository `name` would lie inside another object's path, or None when they cannot.

    A repository's keys are `v2/<name>/<folder>/...` with a folder of `layout.REPOSITORY_FOLDERS`, so a component
    equal to a folder, after the first, puts the name inside the keys of the repository named by the components
    before it (its tags, its tags list, and the folders of this name against that one's tags). The first component
    only meets the objects at the top of `v2/`, of which `index.html` alone is a possible name.
    """
    components = name.split("/")
    if components[0] in _TOP_LEVEL:
        return (
            f"'{components[0]}' is reserved as a first path component "
            f"(it would put this repository's objects inside v2/{components[0]})"
        )
    for position, component in enumerate(components[1:], start=1):
        if component in layout.REPOSITORY_FOLDERS:
            parent = "/".join(components[:position])
            return (
                f"'{component}' is a reserved path component after the first ({', '.join(layout.REPOSITORY_FOLDERS)}):"
                f" it would put this repository's objects among those of '{parent}'"
            )
    return None


def name_problem(name: str) -> str | None:
    """Why this registry refuses repository `name`, in words a user can act on; None when it takes it."""
    if len(name) > MAX_NAME_LENGTH:
        return f"repository names are at most {MAX_NAME_LENGTH} characters"
    if not NAME_RE.fullmatch(name):
        if NAME_RE.fullmatch(name.lower()):
            return "repository names are lowercase"
        return (
            "a repository name is components of lowercase letters and digits, joined by '.', '_', '__' or '-' "
            "inside a component and by '/' between them"
        )
    return name_overlap(name)


def is_name(name: str) -> bool:
    """Whether `name` is a repository name this registry can store (the grammar, and no overlap)."""
    return name_problem(name) is None


def check_name(name: str) -> str:
    problem = name_problem(name)
    if problem is not None:
        raise NameDenied(problem, detail={"name": name[:300]})
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
