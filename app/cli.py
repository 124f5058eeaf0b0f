"""The `storj-registry` command."""

from __future__ import annotations

import argparse
import sys

from app.settings import SettingsError, load_settings
from app.tools.commands import add_tool_commands


def serve(args: argparse.Namespace) -> int:
    from app.edge import server_options, warn_if_exposed
    from app.lifecycle import serve as run_server
    from app.main import create_app
    from app.malloc import limit_malloc_arenas
    from app.observability import configure_logging

    limit_malloc_arenas()  # before any thread starts: RSS flat in the layer size (app.malloc)
    settings = load_settings()
    configure_logging(settings.log_format, args.log_level)  # before anything logs, create_app included
    app = create_app(settings)
    warn_if_exposed(args.host, settings)
    # uvicorn's own logging and access log are turned off, and the graceful stop set up, by app.lifecycle.serve.
    options = server_options(settings)  # HTTPS, header-size bound (app.edge)
    run_server(app, settings, host=args.host, port=args.port, log_level=args.log_level, proxy_headers=False, **options)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="storj-registry", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="run the registry API (settings from REGISTRY_* variables)")
    serve_parser.add_argument("--host", default="127.0.0.1")
    serve_parser.add_argument("--port", type=int, default=5000)
    serve_parser.add_argument("--log-level", default="info")
    serve_parser.set_defaults(handler=serve)
    add_tool_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except SettingsError as exc:
        print(f"storj-registry: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
