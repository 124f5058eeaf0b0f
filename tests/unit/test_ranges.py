import pytest

from app.api.ranges import parse_content_range, parse_range
from app.errors import BlobUploadInvalid, RangeInvalid, RangeNotSatisfiable


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-9", (0, 9)),
        ("bytes=500-1499", (500, 1499)),
        ("bytes=500-", (500, 1999)),
        ("bytes=-500", (1500, 1999)),
        ("bytes=1990-5000", (1990, 1999)),
        ("bytes=-5000", (0, 1999)),
    ],
)
def test_single_ranges_select_inclusive_bounds(header: str, expected: tuple[int, int]) -> None:
    assert parse_range(header, 2000) == expected


@pytest.mark.parametrize("header", ["bytes=2000-", "bytes=5-4", "bytes=-0", "bytes=-", "items=0-1", "bytes=x-1"])
def test_unsatisfiable_or_malformed_ranges_are_416(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable) as raised:
        parse_range(header, 2000)
    assert raised.value.headers["Content-Range"] == "bytes */2000"


def test_multiple_ranges_fall_back_to_the_whole_body() -> None:
    assert parse_range("bytes=0-1,5-6", 2000) is None


@pytest.mark.parametrize(
    ("header", "expected"),
    [("0-99", (0, 99)), ("100-199", (100, 199)), ("bytes 0-9/10", (0, 9)), ("bytes=0-9", (0, 9))],
)
def test_content_range_of_a_chunk(header: str, expected: tuple[int, int]) -> None:
    assert parse_content_range(header) == expected


def test_malformed_content_range_is_400() -> None:
    with pytest.raises(BlobUploadInvalid):
        parse_content_range("abc")


def test_inverted_content_range_is_416() -> None:
    with pytest.raises(RangeInvalid):
        parse_content_range("10-5")
