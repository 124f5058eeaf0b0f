import pytest

from app.errors import DigestInvalid, NameDenied, TagInvalid
from app.registry.references import check_digest, check_name, check_reference, check_tag

GOOD_NAMES = [
    "a", "library/ubuntu", "team/app", "a0-b__c.d/e", "x" * 255, "a--b", "a/b/c/d", "tags/app", "a/tagsx", "a/list",
]  # fmt: skip
# Names whose keys would lie inside another repository's keys, or inside v2/index.html (or their `.json` sidecars).
OVERLAPPING_NAMES = ["a/tags/list", "a/manifests/v1", "a/b/blobs", "a/referrers/x", "index.html", "index.html.json/a"]
BAD_NAMES = ["", "A", "a/", "/a", "a//b", "../etc", "a/../b", "a/./b", "a_", "-a", "a__-b", "x" * 256, "a b", "a%2fb"]


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_names_of_the_spec_grammar_are_accepted(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", BAD_NAMES)
def test_names_outside_the_grammar_are_denied(name: str) -> None:
    with pytest.raises(NameDenied) as refused:
        check_name(name)
    assert refused.value.code == "DENIED" and refused.value.status == 403


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("Team/X", "repository names are lowercase"),
        ("team/blobs", "'blobs' is a reserved path component"),
        ("x" * 256, "at most 255 characters"),
        ("a__-b", "components of lowercase letters and digits"),
    ],
)
def test_a_refused_name_says_why(name: str, why: str) -> None:
    with pytest.raises(NameDenied, match=why):
        check_name(name)


@pytest.mark.parametrize("name", OVERLAPPING_NAMES)
def test_names_inside_another_repositorys_keys_are_denied_saying_why(name: str) -> None:
    with pytest.raises(NameDenied, match="would put this repository's objects"):
        check_name(name)


@pytest.mark.parametrize("tag", ["latest", "1.2.3", "_x", "A-b_c.d", "a" * 128])
def test_tags_of_the_spec_grammar_are_accepted(tag: str) -> None:
    assert check_tag(tag) == tag


@pytest.mark.parametrize("tag", ["", ".x", "-x", "a/b", "a" * 129, "a b", "..", "tag\n"])
def test_bad_tags_are_tag_invalid(tag: str) -> None:
    with pytest.raises(TagInvalid):
        check_tag(tag)


@pytest.mark.parametrize("digest", ["sha256:" + "a" * 64, "sha512:" + "0" * 128])
def test_sha256_and_sha512_digests_are_accepted(digest: str) -> None:
    assert check_digest(digest) == digest


@pytest.mark.parametrize(
    "digest",
    ["sha256:" + "A" * 64, "sha256:" + "a" * 63, "sha512:" + "a" * 64, "md5:abc", "sha256:", "sha256:../" + "a" * 61],
)
def test_malformed_digests_are_digest_invalid(digest: str) -> None:
    with pytest.raises(DigestInvalid):
        check_digest(digest)


def test_a_reference_with_a_colon_is_checked_as_a_digest() -> None:
    with pytest.raises(DigestInvalid):
        check_reference("v1:2")
    assert check_reference("v1.2") == "v1.2"
