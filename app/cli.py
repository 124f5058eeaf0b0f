"""The `storj-registry` command: `serve` runs the registry; the other commands inspect and tidy its store.

This module imports little when loaded: the rest is imported inside `main` with Ctrl-C held back, so an
interrupt during those imports (half a second) is an "interrupted" line rather than a traceback from deep in a
library's import.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")
ANY_ADDRESS = frozenset({"", "0.0.0.0", "::"})
HEALTH_TIMEOUT_SECONDS = 4.0
EXIT_INTERRUPTED = 130


class Parser(argparse.ArgumentParser):
    """Usage mistakes in one line (and exit 2), pointing at --help rather than repeating the usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def serve(args: argparse.Namespace) -> int:
    import logging

    from app.edge import quiet_protocol_errors, server_options, warn_if_exposed
    from app.lifecycle import listening_socket, prepare_directories
    from app.lifecycle import serve as run_server
    from app.main import create_app
    from app.malloc import limit_malloc_arenas
    from app.observability import configure_logging
    from app.settings import load_settings, store_line, unknown_variables

    limit_malloc_arenas()  # before any thread starts: RSS flat in the layer size (app.malloc)
    settings = load_settings()
    host, port = args.host or settings.listen_host, args.port or settings.listen_port
    options = server_options(settings)  # HTTPS, header-size bound (app.edge); checks the TLS files
    sock = listening_socket(host, port)  # a port in use is a one-line SettingsError, before anything is written
    prepare_directories(settings)  # a wrong directory is a one-line SettingsError, not a traceback
    configure_logging(settings.log_format, args.log_level)  # before anything logs, create_app included
    quiet_protocol_errors()
    log = logging.getLogger("storj_registry")
    log.info("%s", store_line(settings))
    for sentence in unknown_variables():
        log.warning("%s", sentence)
    app = create_app(settings)
    warn_if_exposed(host, settings)
    # uvicorn's own logging and access log are turned off, and the graceful stop set up, by app.lifecycle.serve.
    run_server(app, settings, sock, host=host, port=port, log_level=args.log_level, proxy_headers=False, **options)
    return 0


def healthcheck(args: argparse.Namespace) -> int:
    """The container's HEALTHCHECK: `/healthz` of the `serve` this container runs, on the port it really uses."""
    import ssl
    import urllib.request

    from app.settings import load_settings

    settings = load_settings()
    served = served_arguments(Path("/proc/1/cmdline"))
    host = (served and served.host) or settings.listen_host
    port = args.port or (served and served.port) or settings.listen_port
    scheme = "https" if settings.tls_cert else "http"
    url = f"{scheme}://{'127.0.0.1' if host in ANY_ADDRESS else host}:{port}/healthz"
    unverified = ssl.create_default_context()  # our own certificate, asked over loopback: no name to check
    unverified.check_hostname, unverified.verify_mode = False, ssl.CERT_NONE
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=unverified)
    )
    try:
        with opener.open(url, timeout=HEALTH_TIMEOUT_SECONDS) as response:
            response.read()
    except OSError as exc:
        print(f"storj-registry healthcheck: {health_problem(url, exc)}", file=sys.stderr)
        return 1
    return 0


def health_problem(url: str, exc: OSError) -> str:
    """Why `/healthz` did not answer, as a sentence (urllib's own words are `<urlopen error [Errno 111] …>`)."""
    import ssl
    import urllib.error

    if isinstance(exc, urllib.error.HTTPError):
        return f"{url} answered {exc.code} {exc.reason}"
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, ConnectionRefusedError):
        return f"nothing listens at {url}: is `storj-registry serve` running on that port?"
    if isinstance(reason, TimeoutError):
        return f"{url} did not answer within {HEALTH_TIMEOUT_SECONDS:g} s"
    if isinstance(reason, ssl.SSLError):
        return f"the TLS handshake with {url} failed ({reason.reason or reason})"
    if isinstance(reason, OSError):
        return f"{url} cannot be reached ({reason.strerror or type(reason).__name__})"
    return f"{url} cannot be reached ({reason})"


def served_arguments(cmdline: Path) -> argparse.Namespace | None:
    """The options of `storj-registry serve` when that is the process `cmdline` describes (PID 1 in a container)."""
    try:
        argv = cmdline.read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return None
    if "serve" not in argv:
        return None
    parser = argparse.ArgumentParser(add_help=False)
    add_serve_arguments(parser)
    known, _ = parser.parse_known_args(argv[argv.index("serve") + 1 :])
    return known


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host",
        help="address to listen on; 0.0.0.0 for every interface (default: REGISTRY_LISTEN_HOST, else 127.0.0.1)",
    )
    parser.add_argument(
        "--port", type=port_number, help="TCP port to listen on (default: REGISTRY_LISTEN_PORT, else 5000)"
    )
    parser.add_argument(
        "--log-level",
        default="info",
        type=str.lower,
        choices=LOG_LEVELS,
        help="least severe log lines printed (default: %(default)s)",
    )


def port_number(text: str) -> int:
    """A TCP port (argparse type): a mistake is a usage error naming the option, not uvicorn's traceback."""
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text} is not a TCP port (1-65535)")
    return int(text)


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("storj-registry")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


SERVE_DESCRIPTION = """Run the registry API until SIGTERM or Ctrl-C (a graceful stop).

Every other setting is a REGISTRY_* environment variable, or a line of a .env file in the current directory
(all of them: docs/settings.md). The ones most used:
  REGISTRY_STORAGE          filesystem (default) or s3
  REGISTRY_DATA_DIR         the filesystem store's directory (default ./data)
  REGISTRY_STAGING_DIR      where uploads are assembled (default ./staging)
  REGISTRY_S3_BUCKET, REGISTRY_S3_ACCESS_KEY, REGISTRY_S3_SECRET_KEY, REGISTRY_S3_PREFIX
  REGISTRY_S3_ENDPOINT      the S3 gateway (default https://gateway.storjshare.io, Storj's public one)
  REGISTRY_PUBLIC_URL       where the bucket is served (linksharing): blob reads are redirected there
  REGISTRY_AUTH_HTPASSWD    an htpasswd file (bcrypt): who may push; without it anyone can
  REGISTRY_DELETE_ENABLED   true to allow deleting manifests, tags and blobs
  REGISTRY_LOG_FORMAT       text (default) or json
The first log line names the store, the staging directory and the public URL in use."""


def build_parser() -> argparse.ArgumentParser:
    from app.tools.commands import add_tool_commands

    parser = Parser(
        prog="storj-registry",
        description=__doc__.split("\n\n")[0],
        epilog="Settings come from REGISTRY_* environment variables or a .env file (docs/settings.md).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve_parser = commands.add_parser(
        "serve",
        help="run the registry API",
        description=SERVE_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_serve_arguments(serve_parser)
    serve_parser.set_defaults(handler=serve)
    health = commands.add_parser(
        "healthcheck",
        help="exit 0 when the local service answers /healthz (the container's HEALTHCHECK)",
        description="Ask /healthz of the service on this machine: the port of a `serve` running as PID 1 "
        "(in a container), else REGISTRY_LISTEN_PORT. Exit 0 when it answers, 1 otherwise.",
    )
    health.add_argument("--port", type=port_number, help="probe this port instead")
    health.set_defaults(handler=healthcheck)
    add_tool_commands(commands)
    return parser


@contextlib.contextmanager
def interrupts_held() -> Iterator[list[int]]:
    """Ctrl-C (SIGINT) noted instead of raised while the block runs: the list holds the signals that arrived.

    For stretches where a KeyboardInterrupt would do harm and waiting costs nothing: imports (the exception
    surfaces as a traceback from inside a library), and the summary of work already done (an interrupt then
    would print success and exit 130). Only the main thread can hold signals; elsewhere nothing is held.
    """
    arrived: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield arrived
        return
    previous = signal.signal(signal.SIGINT, lambda number, _frame: arrived.append(number))
    try:
        yield arrived
    finally:
        signal.signal(signal.SIGINT, previous)


def main(argv: list[str] | None = None, interrupted_while_loading: list[int] | None = None) -> int:
    """The command; without `argv`, the process's own command line, whose end is the process's end: a Ctrl-C
    after the outcome was printed is then ignored, or Python's exit would die of it (exit 130 after success).

    `interrupted_while_loading`: the Ctrl-Cs noted by `python -m app` before this module was loaded; from here
    on Ctrl-C raises KeyboardInterrupt again, as the commands expect."""
    status = run(argv, interrupted_while_loading)
    if argv is None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    return status


def run(argv: list[str] | None, interrupted_while_loading: list[int] | None = None) -> int:
    with interrupts_held() as interrupted:
        from app.settings import SettingsError

        parser = build_parser()  # imports every command's modules
    if interrupted_while_loading is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)  # the commands expect KeyboardInterrupt
        interrupted += interrupted_while_loading
    if interrupted:
        print("storj-registry: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except SettingsError as exc:
        print(f"storj-registry: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C outside `serve`'s own graceful stop (during start-up, or in a tool)
        print(f"storj-registry {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
