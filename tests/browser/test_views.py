"""What a person sees at the bucket's root URL on the linksharing stand-in, and at each deep link."""

from __future__ import annotations

import json

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from tests.browser.browser import Browser
from tests.browser.conftest import APP, LABELS, MULTI, NOTE, SIGNATURE, Pushed, Registry

pytestmark = pytest.mark.browser

REPOSITORIES = ["demo/app", "demo/broken", "demo/layers", "demo/multi", "demo/untagged"]


def short(digest: str) -> str:
    return digest[: len("sha256:") + 12]


def test_the_root_lists_repositories_and_filters_them(browser: Browser, registry: Registry, pushed: Pushed) -> None:
    browser.open(f"{registry.static_url}/")
    assert browser.heading() == "Repositories"
    rows = browser.table("Repositories")
    assert [row["Repository"] for row in rows] == REPOSITORIES
    counts = {row["Repository"]: row["Tags"] for row in rows}
    assert counts["demo/app"] == "3 tags"
    assert counts["demo/untagged"] == "no tags list"
    assert browser.one(".count").text == "5 repositories"
    browser.shot("catalog")

    browser.one("#filter-repositories").send_keys("multi")
    browser.wait(lambda d: len(browser.table("Repositories")) == 1)
    assert browser.one(".count").text == "1 of 5 repositories match"
    assert browser.errors() == []


def test_a_repository_lists_its_tags_sortable_by_push_time(
    browser: Browser, registry: Registry, pushed: Pushed
) -> None:
    browser.open(f"{registry.static_url}/#/{APP}")
    assert (browser.kind(), browser.heading()) == ("Repository", APP)
    host = registry.static_url.removeprefix("http://")
    assert browser.commands() == [f"docker pull {host}/{APP}:2.0"]  # no `latest`: the highest version
    rows = {row["Tag"]: row for row in browser.table(f"Tags of {APP}")}
    assert list(rows) == ["1.0", "1.0-sig", "2.0"]
    first = rows["1.0"]
    assert first["Digest"] == short(pushed.image.manifest_digest)
    assert first["Type"] == "OCI image"
    layers = json.loads(pushed.image.manifest_bytes)["layers"]
    assert first["Size"] == f"{sum(layer['size'] for layer in layers) / 1000:.2f} kB"  # compressed, < 10 kB
    assert first["Created"] == "2026-01-02 03:04 UTC"
    assert first["Pushed"].endswith("UTC")
    assert rows["1.0-sig"]["Type"] == f"Artifact: {SIGNATURE}"
    browser.shot("repository")

    pushed_header = next(button for button in browser.all("th button.sort") if button.text == "Pushed")
    pushed_header.click()
    browser.wait(lambda d: browser.one("th[aria-sort='descending']").text == "Pushed")
    order = [row["Tag"] for row in browser.table(f"Tags of {APP}")]
    assert order.index("2.0") < order.index("1.0")  # pushed a second later
    assert browser.errors() == []


def test_a_tag_shows_pull_commands_layers_labels_and_referrers(
    browser: Browser, registry: Registry, pushed: Pushed
) -> None:
    host = registry.static_url.removeprefix("http://")
    browser.open(f"{registry.static_url}/#/{APP}:1.0")
    assert (browser.kind(), browser.heading()) == ("Tag", f"{APP}:1.0")
    assert browser.commands() == [
        f"docker pull {host}/{APP}:1.0",
        f"docker pull {host}/{APP}@{pushed.image.manifest_digest}",
    ]
    layers = browser.table("Layers")
    assert [row["#"] for row in layers] == ["1", "2"]
    assert [row["Digest"].split()[0] for row in layers] == [short(d) for d in pushed.image.layer_digests]
    labels = {row["Key"]: row["Value"] for row in browser.table("Labels")}
    assert labels == LABELS
    referrers = browser.table("Referrers")
    assert [(row["Artifact type"], row["Digest"]) for row in referrers] == [(SIGNATURE, short(pushed.signature))]
    assert pushed.image.manifest_digest in browser.one("pre.json").text or "config" in browser.one("pre.json").text
    browser.shot("tag")

    origin = {"origin": registry.static_url, "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]}
    browser.driver.execute_cdp_cmd("Browser.grantPermissions", origin)
    browser.all(".command button.copy")[1].click()
    browser.wait(lambda d: browser.one("#status").text.startswith("Copied"))
    by_digest = f"docker pull {host}/{APP}@{pushed.image.manifest_digest}"
    assert browser.one("#status").text == f"Copied: {by_digest}"
    pasted = browser.driver.execute_async_script("navigator.clipboard.readText().then(arguments[0])")
    assert pasted == by_digest  # what a person pastes is the command shown

    referrer = browser.driver.find_element(By.LINK_TEXT, short(pushed.signature))
    referrer.click()
    browser.wait(lambda d: browser.kind() == "Manifest")
    browser.wait_idle()
    assert f"Artifact type\n{SIGNATURE}" in browser.text()
    assert browser.errors() == []


def test_an_index_shows_its_platforms_with_links_to_each_child(
    browser: Browser, registry: Registry, pushed: Pushed
) -> None:
    browser.open(f"{registry.static_url}/#/{MULTI}:latest")
    platforms = browser.table("Platforms")
    assert [row["Platform"] for row in platforms] == ["linux/amd64", "linux/arm64"]
    assert [row["Digest"] for row in platforms] == [short(d) for d in pushed.index.child_digests]
    browser.shot("index")

    browser.driver.find_element(By.LINK_TEXT, "linux/arm64").click()
    browser.wait(lambda d: d.current_url.endswith(f"#/{MULTI}@{pushed.index.children[1].manifest_digest}"))
    browser.wait_idle()
    assert "Platform\nlinux/arm64" in browser.text()
    assert len(browser.table("Layers")) == 1
    browser.open(f"{registry.static_url}/#/{MULTI}")
    row = browser.table(f"Tags of {MULTI}")[0]
    assert (row["Type"], row["Platforms"]) == ("OCI index", "linux/amd64, linux/arm64")
    assert browser.commands() == [f"docker pull {registry.static_url.removeprefix('http://')}/{MULTI}:latest"]
    assert browser.errors() == []


def test_deep_links_to_a_digest_an_artifact_without_layers_and_101_layers(
    browser: Browser, registry: Registry, pushed: Pushed
) -> None:
    browser.open(f"{registry.static_url}/#/{APP}@{pushed.note}")
    assert (browser.kind(), browser.heading()) == ("Manifest", f"{APP}@{short(pushed.note)}")
    text = browser.text()
    assert f"Artifact type\n{NOTE}" in text
    assert "No layers" in text
    assert f"oras pull {registry.static_url.removeprefix('http://')}/{APP}@{pushed.note}" in browser.commands()
    browser.shot("artifact")

    browser.open(f"{registry.static_url}/#/demo/layers:101")
    assert len(browser.table("Layers")) == 101
    assert "101 layers" in browser.text()
    browser.shot("layers")
    assert browser.errors() == []


def test_missing_documents_are_said_not_fatal(browser: Browser, registry: Registry, pushed: Pushed) -> None:
    browser.open(f"{registry.static_url}/#/demo/broken:1")
    assert "is missing from the registry" in browser.text()
    assert len(browser.table("Layers")) == 1
    browser.shot("missing-config")

    browser.open(f"{registry.static_url}/#/demo/untagged")
    assert "no tags list" in browser.text()
    browser.open(f"{registry.static_url}/#/demo/nothing:1")
    assert "No manifest demo/nothing:1" in browser.text()
    browser.open(f"{registry.static_url}/#/../etc")
    assert browser.heading() == "Not found"
    assert browser.errors() == []


def test_keyboard_only(browser: Browser, registry: Registry, pushed: Pushed) -> None:
    browser.open(f"{registry.static_url}/")
    body = browser.one("body")
    body.send_keys(Keys.TAB)  # the skip link comes first
    assert browser.driver.switch_to.active_element.text == "Skip to content"
    field = browser.one("#filter-repositories")
    assert browser.one("label[for='filter-repositories']").text == "Filter repositories"
    field.send_keys("layers")
    browser.wait(lambda d: len(browser.table("Repositories")) == 1)
    field.send_keys(Keys.TAB)
    assert browser.driver.switch_to.active_element.text == "demo/layers"
    browser.driver.switch_to.active_element.send_keys(Keys.ENTER)
    browser.wait(lambda d: d.switch_to.active_element.tag_name == "h1")
    assert browser.heading() == "demo/layers"


def test_the_service_shows_the_same_page_at_its_root_under_a_strict_policy(
    browser: Browser, registry: Registry, pushed: Pushed
) -> None:
    """Through the service the page reads the API instead; config blobs redirect to the public URL, which its
    Content-Security-Policy allows, and nothing is refused (a refusal is a console error)."""
    host = registry.push_host
    browser.open(f"{registry.service_url}/")
    assert [row["Repository"] for row in browser.table("Repositories")] == REPOSITORIES
    assert {row["Repository"]: row["Tags"] for row in browser.table("Repositories")}["demo/untagged"] == "no tags list"
    browser.shot("service-catalog")

    browser.open(f"{registry.service_url}/#/{APP}")
    row = {row["Tag"]: row for row in browser.table(f"Tags of {APP}")}["1.0"]
    assert row["Created"] == "2026-01-02 03:04 UTC"  # the config blob, read from the public URL
    assert row["Pushed"].endswith("UTC")  # the service sends Last-Modified as linksharing does

    browser.open(f"{registry.service_url}/#/{APP}:1.0")
    assert browser.commands() == [
        f"docker pull {host}/{APP}:1.0",
        f"docker pull {host}/{APP}@{pushed.image.manifest_digest}",
    ]
    assert {row["Key"]: row["Value"] for row in browser.table("Labels")} == LABELS
    assert [row["Artifact type"] for row in browser.table("Referrers")] == [SIGNATURE]
    browser.shot("service-tag")
    assert browser.errors() == []


CONTRAST = """
function channel(c) { c /= 255; return c <= 0.03928 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4); }
function luminance(rgb) { return 0.2126 * channel(rgb[0]) + 0.7152 * channel(rgb[1]) + 0.0722 * channel(rgb[2]); }
function rgba(text) { return text.match(/[\\d.]+/g).map(Number); }
function background(element) {
  for (; element; element = element.parentElement) {
    var colour = rgba(getComputedStyle(element).backgroundColor);
    if (colour.length === 3 || colour[3] > 0) return colour;
  }
  return [255, 255, 255];
}
var worst = [];
document.querySelectorAll('body *').forEach(function (element) {
  var own = Array.from(element.childNodes).some(function (n) { return n.nodeType === 3 && n.textContent.trim(); });
  if (!own || !element.getClientRects().length || element.closest('.visually-hidden, .skip-link')) return;
  var a = luminance(rgba(getComputedStyle(element).color)), b = luminance(background(element));
  var ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
  if (ratio < 4.5) worst.push(element.tagName + ' ' + element.textContent.trim().slice(0, 30) + ' ' + ratio.toFixed(2));
});
var unnamed = Array.from(document.querySelectorAll('button, a, input')).filter(function (element) {
  var labelled = element.labels && element.labels.length;
  return !labelled && !(element.getAttribute('aria-label') || element.textContent.trim());
}).map(function (element) { return element.outerHTML.slice(0, 60); });
return [worst, unnamed];
"""


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_every_text_has_aa_contrast_and_every_control_a_name(
    browser: Browser, registry: Registry, pushed: Pushed, scheme: str
) -> None:
    browser.driver.execute_cdp_cmd(
        "Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": scheme}]}
    )
    try:
        for fragment in ("", APP, f"{APP}:1.0", f"{MULTI}:latest"):
            browser.open(f"{registry.static_url}/#/{fragment}")
            low_contrast, unnamed = browser.script(CONTRAST)
            assert low_contrast == [], fragment
            assert unnamed == [], fragment
        browser.shot(f"tag-{scheme}")
    finally:
        browser.driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
