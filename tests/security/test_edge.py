"""The network edge: HTTPS, reverse-proxy headers (trusted or not), and limits on what a client may send."""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from app.settings import Settings, SettingsError, load_settings
from tests.security.conftest import PASSWORDS
from tests.security.pki import Pki
from tests.security.raw import RawClient, read
from tests.security.tokenflow import challenge_params
from tests.support.pushing import digest

Serve = Callable[[Settings], str]
BOB = ("bob", PASSWORDS["bob"])
FORWARDED = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "push.example.com", "X-Forwarded-For": "198.51.100.7"}


# HTTPS -----------------------------------------------------------------------------------------------


def test_https_with_a_certificate_clients_verify_against_the_ca(
    auth_settings: Callable[..., Settings], serve: Serve, pki: Pki
) -> None:
    url = serve(auth_settings(tls_cert=pki.server_cert, tls_key=pki.server_key))
    assert url.startswith("https://")
    with httpx.Client(base_url=url, verify=ssl.create_default_context(cafile=pki.ca_cert)) as client:
        assert client.get("/v2/", auth=BOB).status_code == 200
    with pytest.raises(httpx.ConnectError):  # an unknown CA is refused: the certificate is really checked
        httpx.get(f"{url}/v2/")
    with pytest.raises(httpx.HTTPError):  # and nothing is served in clear on that port
        httpx.get(url.replace("https://", "http://") + "/v2/")


def test_certificate_and_key_go_together(pki: Pki) -> None:
    with pytest.raises(SettingsError, match="REGISTRY_TLS_CERT and REGISTRY_TLS_KEY"):
        load_settings(tls_cert=pki.server_cert)


# proxies ---------------------------------------------------------------------------------------------


def test_locations_stay_relative_and_forwarded_headers_are_ignored_from_untrusted_peers(
    auth_settings: Callable[..., Settings], serve: Serve
) -> None:
    url = serve(auth_settings(auth_token_enabled=True))
    with httpx.Client(base_url=url, headers=FORWARDED) as client:
        challenge = challenge_params(client.get("/v2/").headers["www-authenticate"])
        assert challenge["realm"] == f"{url}/auth/token"
        token = client.get("/auth/token", params={"scope": "repository:team/app:push"}, auth=BOB).json()["token"]
        started = client.post("/v2/team/app/blobs/uploads/", headers={"Authorization": f"Bearer {token}"})
        assert started.headers["location"].startswith("/v2/team/app/blobs/uploads/")


def test_trusted_proxies_set_scheme_host_and_client_address(
    auth_settings: Callable[..., Settings], serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="storj_registry.access")
    url = serve(auth_settings(auth_token_enabled=True, trusted_proxies="127.0.0.0/8", auth_max_failures=2))
    with httpx.Client(base_url=url, headers=FORWARDED) as client:
        challenge = challenge_params(client.get("/v2/").headers["www-authenticate"])
        assert challenge["realm"] == "https://push.example.com/auth/token"
        token = client.get("/auth/token", params={"scope": "repository:team/app:push"}, auth=BOB).json()["token"]
        bearer = {"Authorization": f"Bearer {token}"}
        started = client.post("/v2/team/app/blobs/uploads/", headers=bearer)
        location = started.headers["location"]
        assert location.startswith("https://push.example.com/v2/team/app/blobs/uploads/")
        data = b"through the proxy"
        path = location.removeprefix("https://push.example.com")
        finished = client.put(path, params={"digest": digest(data)}, content=data, headers=bearer)
        assert finished.headers["location"] == f"https://push.example.com/v2/team/app/blobs/{digest(data)}"
        # the login limiter counts the forwarded client, not the proxy every client shares
        for _ in range(2):
            client.get("/v2/", auth=("bob", "wrong"))
        assert client.get("/v2/", auth=BOB).status_code == 429
        other_client = {**FORWARDED, "X-Forwarded-For": "203.0.113.5, 198.51.100.8"}
        assert client.get("/v2/", auth=BOB, headers=other_client).status_code == 200
    logged_clients = {getattr(record, "client", None) for record in caplog.records}
    assert {"198.51.100.7", "198.51.100.8"} <= logged_clients  # the access log names the real client
    assert "127.0.0.1" not in logged_clients


@pytest.mark.parametrize("host", ["evil.example/path", "a b", "x@y", ""])
def test_malformed_forwarded_hosts_are_ignored(auth_settings: Callable[..., Settings], serve: Serve, host: str) -> None:
    url = serve(auth_settings(trusted_proxies="127.0.0.1"))
    started = httpx.post(f"{url}/v2/team/app/blobs/uploads/", auth=BOB, headers={"X-Forwarded-Host": host})
    location = started.headers["location"]
    assert location.startswith(("/v2/", url)), location
    assert "evil" not in location and "@" not in location


def test_a_service_url_makes_locations_absolute(auth_settings: Callable[..., Settings], serve: Serve) -> None:
    url = serve(auth_settings(service_url="https://push.example.com/"))
    started = httpx.post(f"{url}/v2/team/app/blobs/uploads/", auth=BOB, headers=FORWARDED)
    assert started.headers["location"].startswith("https://push.example.com/v2/team/app/blobs/uploads/")


# limits ----------------------------------------------------------------------------------------------


def test_oversized_request_heads_are_refused(auth_settings: Callable[..., Settings], serve: Serve) -> None:
    url = serve(auth_settings(max_header_bytes=8192))
    raw = RawClient(url)
    refused = raw.request("GET", "/v2/", {"X-Padding": "a" * 9000})
    assert refused.status == 431 and refused.error_code == "UNSUPPORTED"
    try:  # 1.2 MB of headers: h11 gives up on the incomplete head and drops the connection
        huge = raw.request("GET", "/v2/", {f"X-Pad-{i}": "a" * 4000 for i in range(300)})
        assert huge.status in (400, 431)
    except (ConnectionResetError, BrokenPipeError):
        pass
    assert httpx.get(f"{url}/v2/", auth=BOB).status_code == 200  # and the server is fine


def test_concurrent_uploads_per_client_are_limited(auth_settings: Callable[..., Settings], serve: Serve) -> None:
    url = serve(auth_settings(max_uploads_per_client=1))
    auth = {"Authorization": httpx.BasicAuth(*BOB)._auth_header}
    location = httpx.post(f"{url}/v2/team/app/blobs/uploads/", auth=BOB).headers["location"]
    stalled = RawClient(url).send_head("PATCH", location, {**auth, "Content-Length": "10"})
    stalled.send(b"12345")  # half a chunk: this upload is now streaming
    time.sleep(0.3)
    refused = httpx.post(f"{url}/v2/team/app/blobs/uploads/", auth=BOB)
    assert refused.status_code == 429 and refused.headers["retry-after"]
    assert refused.json()["errors"][0]["code"] == "TOOMANYREQUESTS"
    assert httpx.get(f"{url}{location}", auth=BOB).status_code == 204  # reads are not counted
    stalled.send(b"67890")
    assert read(stalled.getresponse()).status == 202
    assert httpx.post(f"{url}/v2/team/app/blobs/uploads/", auth=BOB).status_code == 202


def test_the_token_endpoint_and_open_routes_survive_concurrency(
    auth_settings: Callable[..., Settings], serve: Serve
) -> None:
    """Many logins at once (bcrypt runs in worker threads): all succeed, the event loop keeps answering."""
    url = serve(auth_settings(auth_token_enabled=True))
    results: list[int] = []

    def login() -> None:
        results.append(httpx.get(f"{url}/auth/token", auth=BOB, timeout=30).status_code)

    threads = [threading.Thread(target=login) for _ in range(16)]
    for thread in threads:
        thread.start()
    assert httpx.get(f"{url}/healthz").status_code == 200
    for thread in threads:
        thread.join()
    assert results == [200] * 16


def test_settings_defaults_are_sane(tmp_path: Path) -> None:
    settings = Settings(storage="filesystem", data_dir=tmp_path, staging_dir=tmp_path)
    assert settings.max_blob_bytes == 10 * 1024**3
    assert settings.staging_min_free_bytes == 512 * 1024**2
    assert settings.max_uploads_per_client == 64
    assert settings.max_header_bytes == 64 * 1024
    assert not settings.auth_enabled and not settings.trusted_proxies


def test_blobs_over_the_size_limit_are_refused_while_streaming(
    auth_settings: Callable[..., Settings], serve: Serve
) -> None:
    url = serve(auth_settings(max_blob_bytes=100_000))
    with httpx.Client(base_url=url, auth=BOB) as bob:
        location = bob.post("/v2/team/app/blobs/uploads/").headers["location"]
        chunks = (b"x" * 16384 for _ in range(64))  # 1 MiB, chunked: no length announced
        refused = bob.patch(location, content=chunks)
        assert refused.status_code == 413 and refused.json()["errors"][0]["code"] == "SIZE_INVALID"
        assert bob.get(location).status_code == 404  # the session went with it, and its disk
        location = bob.post("/v2/team/app/blobs/uploads/").headers["location"]
        declared = bob.put(location, params={"digest": digest(b"y" * 200_000)}, content=b"y" * 200_000)
        assert declared.status_code == 413
        within = b"z" * 100_000
        location = bob.post("/v2/team/app/blobs/uploads/").headers["location"]
        assert bob.put(location, params={"digest": digest(within)}, content=within).status_code == 201
    staging = Path(auth_settings().staging_dir)
    assert not list(staging.glob("*/data")), list(staging.iterdir())  # no session holds bytes (receipts may stay)


def test_uploads_stop_above_the_staging_free_space_floor(auth_settings: Callable[..., Settings], serve: Serve) -> None:
    url = serve(auth_settings(staging_min_free_bytes=2**62))  # more than any disk has free
    refused = httpx.post(f"{url}/v2/team/app/blobs/uploads/", auth=BOB)
    assert refused.status_code == 507, refused.text
    assert refused.json()["errors"][0]["code"] == "UNAVAILABLE" and refused.headers["retry-after"]
    assert "nearly full" in refused.json()["errors"][0]["message"]
    assert httpx.get(f"{url}/v2/team/app/tags/list", auth=BOB).status_code == 404  # reads go on


def test_stalled_uploads_time_out_and_free_their_session(auth_settings: Callable[..., Settings], serve: Serve) -> None:
    url = serve(auth_settings(upload_idle_timeout=0.5))
    auth = {"Authorization": httpx.BasicAuth(*BOB)._auth_header}
    location = httpx.post(f"{url}/v2/team/app/blobs/uploads/", auth=BOB).headers["location"]
    stalled = RawClient(url).send_head("PATCH", location, {**auth, "Content-Length": "1000"})
    stalled.send(b"only the start")
    started = time.monotonic()
    answer = read(stalled.getresponse())
    assert answer.status == 408 and answer.error_code == "BLOB_UPLOAD_INVALID"
    assert 0.4 < time.monotonic() - started < 5
    assert httpx.get(f"{url}{location}", auth=BOB).status_code == 404
