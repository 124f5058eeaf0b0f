"""The `storj-registry` command: `serve` runs the registry; the other commands inspect and tidy its store."""

from __future__ import annotations

import argparse
import ssl
import sys
import urllib.request
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import NoReturn

from app.settings import SettingsError, load_settings
from app.tools.commands import add_tool_commands

LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")
ANY_ADDRESS = frozenset({"", "0.0.0.0", "::"})
HEALTH_TIMEOUT_SECONDS = 4.0
EXIT_INTERRUPTED = 130


class Parser(argparse.ArgumentParser):
    """Usage mistakes in one line (and exit 2), pointing at --help rather than repeating the usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def serve(args: argparse.Namespace) -> int:
    from app.edge import quiet_protocol_errors, server_options, warn_if_exposed
    from app.lifecycle import prepare_directories
    from app.lifecycle import serve as run_server
    from app.main import create_app
    from app.malloc import limit_malloc_arenas
    from app.observability import configure_logging

    limit_malloc_arenas()  # before any thread starts: RSS flat in the layer size (app.malloc)
    settings = load_settings()
    host, port = args.host or settings.listen_host, args.port or settings.listen_port
    options = server_options(settings)  # HTTPS, header-size bound (app.edge); checks the TLS files
    prepare_directories(settings)  # a wrong directory is a one-line SettingsError, not a traceback
    configure_logging(settings.log_format, args.log_level)  # before anything logs, create_app included
    quiet_protocol_errors()
    app = create_app(settings)
    warn_if_exposed(host, settings)
    # uvicorn's own logging and access log are turned off, and the graceful stop set up, by app.lifecycle.serve.
    run_server(app, settings, host=host, port=port, log_level=args.log_level, proxy_headers=False, **options)
    return 0


def healthcheck(args: argparse.Namespace) -> int:
    """The container's HEALTHCHECK: `/healthz` of the `serve` this container runs, on the port it really uses."""
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
        print(f"storj-registry healthcheck: {url}: {exc}", file=sys.stderr)
        return 1
    return 0


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
    try:
        return version("storj-registry")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="storj-registry",
        description=__doc__,
        epilog="Settings come from REGISTRY_* environment variables or a .env file (see the README).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve_parser = commands.add_parser(
        "serve",
        help="run the registry API",
        description="Run the registry API until SIGTERM or Ctrl-C (a graceful stop). "
        "Every other setting is a REGISTRY_* environment variable (see the README's Settings).",
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
