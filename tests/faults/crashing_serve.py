"""`storj-registry serve` that kills itself with SIGKILL at one chosen point, for the crash-window tests.

`CRASH_AT` names the point:
- `call:<module>:<Class>.<method>`: when that method is first called (e.g. the discard of a committed upload);
- `write:<regex>`: right before the first write (put_bytes, put_file, copy) of a key the regex matches in full.

Nothing after the point runs: no `finally`, no cleanup, as with a power cut or the OOM killer.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
import re
import signal
import sys
from collections.abc import Callable
from typing import Any

from app import cli
from app.storage.filesystem import FilesystemStorage
from app.storage.s3 import S3Storage

WRITES = ("put_bytes", "put_file", "copy")


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def crash_on_call(target: str) -> None:
    module_name, _, qualified = target.partition(":")
    owner_name, _, method_name = qualified.partition(".")
    owner = getattr(importlib.import_module(module_name), owner_name)
    original = getattr(owner, method_name)
    if inspect.iscoroutinefunction(original):

        async def crashing(*args: Any, **kwargs: Any) -> Any:
            die()

    else:

        def crashing(*args: Any, **kwargs: Any) -> Any:
            die()

    setattr(owner, method_name, functools.wraps(original)(crashing))


def crash_before_write(pattern: re.Pattern[str]) -> None:
    for store in (FilesystemStorage, S3Storage):
        for name in WRITES:
            original = getattr(store, name)
            key_position = 2 if name == "copy" else 1  # copy(source, destination)

            def crashing(
                *args: Any, _original: Callable[..., Any] = original, _at: int = key_position, **kwargs: Any
            ) -> Any:
                if pattern.fullmatch(args[_at]):
                    die()
                return _original(*args, **kwargs)

            setattr(store, name, functools.wraps(original)(crashing))


def main() -> int:
    kind, _, target = os.environ["CRASH_AT"].partition(":")
    if kind == "call":
        crash_on_call(target)
    elif kind == "write":
        crash_before_write(re.compile(target))
    else:
        raise SystemExit(f"unknown CRASH_AT kind {kind!r}")
    return cli.main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
