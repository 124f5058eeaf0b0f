"""Parsing the two range headers of the API: `Range` on blob reads and `Content-Range` on chunk uploads."""

from __future__ import annotations

import re

from app.errors import BlobUploadInvalid, RangeInvalid, RangeNotSatisfiable

_BYTES_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
_CHUNK_RANGE = re.compile(r"(?:bytes[ =])?(\d+)-(\d+)(?:/(?:\d+|\*))?")
_MAX_DIGITS = 19


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """A single `Range: bytes=a-b | a- | -n` as an inclusive (start, end), None for a whole-body answer.

    Unsatisfiable or malformed single ranges are 416, as the conformance suite expects; multi-range requests
    are answered with the whole body (allowed by RFC 9110).
    """
    header = header.strip()
    if "," in header:
        return None
    match = _BYTES_RANGE.fullmatch(header)
    if not match or len(match[1]) > _MAX_DIGITS or len(match[2]) > _MAX_DIGITS:
        raise _unsatisfiable(size)
    first, last = match[1], match[2]
    if first == "" and last == "":
        raise _unsatisfiable(size)
    if first == "":
        length = int(last)
        if length == 0 or size == 0:
            raise _unsatisfiable(size)
        return max(size - length, 0), size - 1
    start = int(first)
    end = size - 1 if last == "" else min(int(last), size - 1)
    if start >= size or (last != "" and int(last) < start):
        raise _unsatisfiable(size)
    return start, end


def _unsatisfiable(size: int) -> RangeNotSatisfiable:
    return RangeNotSatisfiable("requested range not satisfiable", headers={"Content-Range": f"bytes */{size}"})


def parse_content_range(header: str) -> tuple[int, int]:
    """`Content-Range: <start>-<end>` of a chunk (inclusive); a malformed header is a 400, not a 416."""
    match = _CHUNK_RANGE.fullmatch(header.strip())
    if not match or len(match[1]) > _MAX_DIGITS or len(match[2]) > _MAX_DIGITS:
        raise BlobUploadInvalid("malformed Content-Range", detail={"Content-Range": header[:100]})
    start, end = int(match[1]), int(match[2])
    if end < start:
        raise RangeInvalid("Content-Range ends before it starts", detail={"Content-Range": header[:100]})
    return start, end
