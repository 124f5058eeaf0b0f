"""What a newcomer meets first, run as they would: the `storj-registry` command in a fresh directory.

Ctrl-C in a terminal, wrong settings, inspection commands in the wrong place, leftover uploads, an unreachable or
misconfigured bucket, TLS probes on the plain port, `--help`, and the container's health check.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import pty
import select
import shutil
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from app.cli import served_arguments
from app.edge import QuietProtocolErrors
from app.registry.uploads import Uploads
from app.storage.filesystem import FilesystemStorage
from tests.e2e.clients import skopeo
from tests.ops._service import REPOSITORY_ROOT, ServiceProcess, s3_environment
from tests.support.images import blob_path, diff_id, make_layer, oci_ref, write_image
from tests.support.pushing import OCI_MANIFEST
from tests.support.seaweed import S3Server
from tests.support.tools import free_port, require_tool

COMMAND_TIMEOUT_S = 60.0


def environment(**settings: str) -> dict[str, str]:
    """This process's environment minus its REGISTRY_* settings, plus `settings`, for a child `storj-registry`."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("REGISTRY_")}
    return {**env, "PYTHONPATH": str(REPOSITORY_ROOT), **settings}


def run(cwd: Path, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        cwd=cwd,
        env=environment(**settings),
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
    )


# --- Ctrl-C -------------------------------------------------------------------------------------------------


def read_until(fd: int, done: bool | None, seconds: float, want: bytes = b"") -> bytes:
    """Read a pseudo-terminal's output for up to `seconds`, or until `want` shows up."""
    output = b""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not (want and want in output):
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
    return output


def test_ctrl_c_in_a_terminal_stops_gracefully_without_a_traceback(tmp_path: Path) -> None:
    """The README's one command, in a terminal: ^C goes through the terminal as SIGINT to the process group."""
    port = free_port()
    pid, terminal = pty.fork()
    if pid == 0:  # the child: a session leader whose controlling terminal is the pty
        os.chdir(tmp_path)
        env = environment()
        os.execve(sys.executable, [sys.executable, "-m", "app", "serve", "--port", str(port)], env)
    try:
        output = read_until(terminal, None, 30, want=b"listening on http://")
        assert b"listening on http://" in output, output.decode(errors="replace")
        os.write(terminal, b"\x03")  # what Ctrl-C types
        output += read_until(terminal, None, 30, want=b"Finished server process")
        output += read_until(terminal, None, 2)
        _, status = os.waitpid(pid, 0)
    finally:
        with contextlib.suppress(ProcessLookupError, ChildProcessError):
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        os.close(terminal)
    text = output.decode(errors="replace")
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text
    assert "Shutting down" in text and "Finished server process" in text, text
    assert os.waitstatus_to_exitcode(status) == 0, text


# --- wrong settings -----------------------------------------------------------------------------------------


def read_only(directory: Path, argv: list[str]) -> list[str]:
    """`argv` run where `directory` cannot be written: a read-only bind mount as root (as a read-only container
    root filesystem), its permissions otherwise."""
    if os.geteuid() != 0:
        directory.chmod(0o555)
        return argv
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare not found: apt-get install util-linux")
    return [unshare, "-m", "sh", "-c", 'mount --bind -o ro "$0" "$0" && exec "$@"', str(directory), *argv]


@pytest.mark.parametrize(
    ("case", "variable", "words"),
    [
        ("missing-parent", "REGISTRY_DATA_DIR", "/proc/nope is not a writable directory (No such file or directory)"),
        ("staging-is-a-file", "REGISTRY_STAGING_DIR", "exists and is not a directory"),
        ("read-only-data", "REGISTRY_DATA_DIR", "is not a writable directory"),
        ("log-level", "--log-level", "invalid choice: 'verbose'"),
        ("bad-value", "REGISTRY_LISTEN_PORT", "less than or equal to 65535"),
        ("bad-port", "--port", "70000 is not a TCP port"),
    ],
)
def test_a_wrong_setting_is_one_line_naming_it_and_exit_2(tmp_path: Path, case: str, variable: str, words: str) -> None:
    argv = [sys.executable, "-m", "app", "serve", "--port", str(free_port())]
    settings: dict[str, str] = {}
    if case == "missing-parent":
        settings["REGISTRY_DATA_DIR"] = "/proc/nope"
    elif case == "staging-is-a-file":
        (tmp_path / "staging").write_text("not a directory")
    elif case == "read-only-data":
        settings["REGISTRY_DATA_DIR"] = str(tmp_path / "data")
        (tmp_path / "data").mkdir()
        argv = read_only(tmp_path / "data", argv)
    elif case == "log-level":
        argv += ["--log-level", "verbose"]
    elif case == "bad-port":
        argv[-1] = "70000"
    else:
        settings["REGISTRY_LISTEN_PORT"] = "70000"
    done = subprocess.run(
        argv, cwd=tmp_path, env=environment(**settings), capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S
    )
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert variable in lines[0] and words in lines[0], lines[0]


# --- inspection commands in the wrong directory -------------------------------------------------------------


@pytest.mark.parametrize("command", ["fsck", "gc"])
def test_inspection_in_a_directory_without_a_store_says_so_and_creates_nothing(tmp_path: Path, command: str) -> None:
    done = run(tmp_path, command)
    assert done.returncode == 3, done.stderr
    assert f"no store at {tmp_path / 'data'}" in done.stderr
    assert "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["fsck", "gc"])
def test_inspection_of_an_empty_store_says_it_is_empty(tmp_path: Path, command: str) -> None:
    FilesystemStorage(tmp_path / "data")  # what `serve` creates before anything is pushed
    done = run(tmp_path, command)
    assert done.returncode == 0, done.stderr
    assert f"{command}: the store is empty: nothing was ever pushed to" in done.stderr


# --- abandoned uploads --------------------------------------------------------------------------------------


def staged(staging: Path, name: str, size: int, idle_seconds: float) -> str:
    """An upload session as the service leaves it, last written `idle_seconds` ago."""
    uploads = Uploads(staging)
    upload = uploads.create(name)
    upload.data.write_bytes(b"x" * size)
    then = time.time() - idle_seconds
    for path in (upload.data, upload.directory):
        os.utime(path, (then, then))
    return upload.id


def test_uploads_lists_and_purges_only_abandoned_sessions(tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    old = staged(staging, "team/app", 2048, idle_seconds=7200)
    fresh = staged(staging, "team/app", 10, idle_seconds=5)
    listed = run(tmp_path, "uploads", "list", "--older-than", "1h")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[0].startswith(f"upload {old} team/app 2048 bytes, idle ")
    assert fresh not in listed.stdout
    assert "found 1 session(s), 2048 bytes" in listed.stderr
    assert {p.name for p in staging.iterdir()} == {old, fresh}  # listing removes nothing

    everything = run(tmp_path, "uploads", "list", "--older-than", "0")
    assert old in everything.stdout and fresh in everything.stdout

    purged = run(tmp_path, "uploads", "purge", "--older-than", "30m")
    assert purged.returncode == 0, purged.stderr
    assert purged.stdout.startswith(f"purged {old} team/app 2048 bytes")
    assert {p.name for p in staging.iterdir()} == {fresh}


def test_uploads_refuses_a_malformed_age_and_creates_no_staging(tmp_path: Path) -> None:
    bad = run(tmp_path, "uploads", "purge", "--older-than", "soon")
    assert bad.returncode == 2 and "'soon' is not a duration" in bad.stderr
    assert len(bad.stderr.splitlines()) == 1
    nothing = run(tmp_path, "uploads", "list")
    assert nothing.returncode == 0 and "no staging directory" in nothing.stderr
    assert list(tmp_path.iterdir()) == []


# --- a store that cannot be used ----------------------------------------------------------------------------


def push_one_blob(url: str) -> httpx.Response:
    body = b"layer bytes"
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    return httpx.post(f"{url}/v2/front/door/blobs/uploads/?digest={digest}", content=body, timeout=60)


def push_one_image(url: str) -> httpx.Response:
    """A blob, then a manifest naming it: the blob is acknowledged once verified and written behind the answer,
    so with the store down it is the manifest (which waits for its blobs) that carries the store's problem."""
    blob = push_one_blob(url)
    if blob.status_code != 201:
        return blob
    config = {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": blob.headers["Docker-Content-Digest"]}
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {**config, "size": 11}, "layers": []}
    headers = {"Content-Type": OCI_MANIFEST}
    return httpx.put(f"{url}/v2/front/door/manifests/v1", content=json.dumps(manifest), headers=headers, timeout=60)


def wait_for_log(service: ServiceProcess, words: str, seconds: float = 20) -> str:
    deadline = time.monotonic() + seconds
    while words not in service.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    return service.log()


@pytest.mark.parametrize("problem", ["unreachable", "wrong-keys"])
def test_an_unusable_store_is_a_warning_at_start_and_named_in_the_push_error(
    tmp_path: Path, s3_server: S3Server, problem: str
) -> None:
    settings = s3_environment(s3_server, s3_server.new_bucket("door"), tmp_path / "staging")
    settings["REGISTRY_S3_MAX_ATTEMPTS"] = "1"
    if problem == "unreachable":
        settings["REGISTRY_S3_ENDPOINT"] = f"http://127.0.0.1:{free_port()}"
        expected = "the registry cannot connect to its S3 endpoint"
    else:
        settings["REGISTRY_S3_SECRET_KEY"] = "not-the-secret"
        expected = "the S3 server refused the registry's credentials ("  # 403 at start, then the S3 error code
    service = ServiceProcess(tmp_path, settings)
    try:
        service.wait_ready()
        log = wait_for_log(service, "the store is not usable")
        assert f"WARNING storj_registry: the store is not usable: {expected}" in log, log
        answer = push_one_image(service.url)
    finally:
        service.stop()
    assert answer.status_code == 503
    (error,) = answer.json()["errors"]
    assert error["code"] == "UNAVAILABLE"
    assert expected in error["message"], error
    assert settings["REGISTRY_S3_SECRET_KEY"] not in answer.text


def test_a_usable_store_starts_without_that_warning(tmp_path: Path, s3_server: S3Server) -> None:
    service = ServiceProcess(tmp_path, s3_environment(s3_server, s3_server.new_bucket("door"), tmp_path / "st"))
    try:
        service.wait_ready()
        assert push_one_blob(service.url).status_code == 201
    finally:
        service.stop()
    assert "not usable" not in service.log()


# --- TLS probes on the plain port ---------------------------------------------------------------------------


def tls_probe(port: int) -> None:
    """What docker and skopeo do first on every connection: a TLS handshake, which a plain-HTTP port refuses."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, contextlib.suppress(ssl.SSLError, OSError):
        context.wrap_socket(raw, server_hostname="127.0.0.1")


def test_tls_probes_on_the_plain_port_log_no_warning(tmp_path: Path) -> None:
    service = ServiceProcess(tmp_path, {})
    try:
        service.wait_ready()
        for _ in range(3):
            tls_probe(service.port)
        assert httpx.get(f"{service.url}/v2/").status_code == 200  # still serving
    finally:
        service.stop()
    assert "Invalid HTTP request" not in service.log()
    assert "WARNING uvicorn" not in service.log()


def test_protocol_errors_are_kept_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.front_door.uvicorn")
    logger.addFilter(QuietProtocolErrors())
    caplog.set_level(logging.DEBUG, logger=logger.name)
    logger.warning("Invalid HTTP request received.")
    logger.warning("something else")
    assert [(r.levelname, r.getMessage()[:24]) for r in caplog.records] == [
        ("DEBUG", "invalid HTTP request (no"),
        ("WARNING", "something else"),
    ]
    caplog.clear()
    caplog.set_level(logging.INFO, logger=logger.name)
    logger.warning("Invalid HTTP request received.")
    assert caplog.records == []


# --- help, version, health check ----------------------------------------------------------------------------


def test_serve_help_describes_each_option_with_its_default(tmp_path: Path) -> None:
    done = run(tmp_path, "serve", "--help")
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    assert "--host HOST address to listen on" in text and "REGISTRY_LISTEN_HOST, else 127.0.0.1" in text
    assert "--port PORT TCP port to listen on" in text and "REGISTRY_LISTEN_PORT, else 5000" in text
    assert "(default: info)" in text
    assert "docs/settings.md" in text and "REGISTRY_STORAGE filesystem (default) or s3" in text
    version = run(tmp_path, "--version")
    assert version.returncode == 0 and version.stdout.startswith("storj-registry ")


def test_healthcheck_follows_the_port_served(tmp_path: Path) -> None:
    service = ServiceProcess(tmp_path, {})  # serve --port <free port>
    try:
        service.wait_ready()
        assert run(tmp_path, "healthcheck", REGISTRY_LISTEN_PORT=str(service.port)).returncode == 0
        assert run(tmp_path, "healthcheck", "--port", str(service.port)).returncode == 0
        unhealthy = run(tmp_path, "healthcheck", REGISTRY_LISTEN_PORT=str(free_port()))
    finally:
        service.stop()
    assert unhealthy.returncode == 1
    assert unhealthy.stderr.startswith("storj-registry healthcheck: nothing listens at http://127.0.0.1:"), unhealthy
    assert "Errno" not in unhealthy.stderr and "urlopen" not in unhealthy.stderr


def test_healthcheck_reads_the_port_of_the_serve_process(tmp_path: Path) -> None:
    """In the container, PID 1 is `storj-registry serve`: its own --port wins over REGISTRY_LISTEN_PORT."""
    cmdline = tmp_path / "cmdline"
    cmdline.write_bytes(b"/opt/venv/bin/python\0/opt/venv/bin/storj-registry\0serve\0--port\08080\0")
    served = served_arguments(cmdline)
    assert served is not None and (served.port, served.host) == (8080, None)
    cmdline.write_bytes(b"/sbin/docker-init\0--\0sleep\0")
    assert served_arguments(cmdline) is None
    assert served_arguments(tmp_path / "absent") is None


# --- the README's first push --------------------------------------------------------------------------------


@pytest.mark.e2e
def test_the_readme_first_push_from_a_saved_image_and_back(tmp_path: Path) -> None:
    """`docker save` output (made here by skopeo from a layout) pushed with the README's line, then pulled back."""
    layout = tmp_path / "layout"
    image = write_image(layout, "1", [make_layer(7, 20_000)])
    archive = tmp_path / "app.tar"
    skopeo("copy", oci_ref(layout, "1"), f"docker-archive:{archive}:demo/app:1")
    service = ServiceProcess(tmp_path / "service", {})
    try:
        service.wait_ready()
        host = f"127.0.0.1:{service.port}"
        skopeo("copy", "--dest-tls-verify=false", f"docker-archive:{archive}", f"docker://{host}/demo/app:1")
        skopeo("copy", "--src-tls-verify=false", f"docker://{host}/demo/app:1", oci_ref(tmp_path / "back", "1"))
    finally:
        service.stop()
    # docker-archive holds layers uncompressed and skopeo compresses them again: compare what they unpack to.
    back = tmp_path / "back"
    (entry,) = json.loads((back / "index.json").read_text())["manifests"]
    manifest = json.loads(blob_path(back, entry["digest"]).read_text())
    (layer,) = manifest["layers"]
    assert diff_id(blob_path(back, layer["digest"]).read_bytes()) == diff_id(make_layer(7, 20_000))
    assert len(image.layer_digests) == 1


@pytest.mark.e2e
def test_the_readme_offline_first_push(tmp_path: Path) -> None:
    """An image built from a file with umoci, pushed with skopeo and copied with `storj-registry copy`, as the
    README's first push does with no network."""
    umoci = require_tool("umoci")
    (tmp_path / "README.md").write_text("hello\n")
    for step in (["init", "--layout", "./img"], ["new", "--image", "./img:1"]):
        subprocess.run([umoci, *step], cwd=tmp_path, check=True, capture_output=True)
    insert = ["insert", "--rootless", "--image", "./img:1", "README.md", "/README.md"]
    subprocess.run([umoci, *insert], cwd=tmp_path, check=True, capture_output=True)
    service = ServiceProcess(tmp_path / "service", {})
    try:
        service.wait_ready()
        host = f"127.0.0.1:{service.port}"
        skopeo("copy", "--dest-tls-verify=false", f"oci:{tmp_path / 'img'}:1", f"docker://{host}/demo/hello:1")
        skopeo("copy", "--src-tls-verify=false", f"docker://{host}/demo/hello:1", oci_ref(tmp_path / "back", "1"))
    finally:
        service.stop()
    copied = run(tmp_path, "copy", "oci:./img:1", "demo/hello:1")
    assert copied.returncode == 0, copied.stderr
    assert copied.stderr.splitlines()[0] == f"storj-registry copy: store: filesystem {tmp_path / 'data'}"
    (entry,) = json.loads((tmp_path / "back" / "index.json").read_text())["manifests"]
    assert (tmp_path / "data" / "v2" / "demo" / "hello" / "manifests" / entry["digest"]).is_file()
