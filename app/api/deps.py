"""Request-scoped access to the long-lived registry, and small helpers shared by the routers."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Depends, Request

from app.errors import PaginationInvalid
from app.events import Origin
from app.observability import request_id_var
from app.registry import Registry
from app.registry.events import ORIGIN


def get_registry(request: Request) -> Registry:
    return request.app.state.registry


RegistryDep = Annotated[Registry, Depends(get_registry)]

MAX_USER_AGENT = 256


async def event_origin(request: Request) -> None:
    """Route dependency: the events the registry emits while serving this request name who made it and from
    where (app/registry/events.py). Runs after the gate, which authenticated the caller."""
    principal = getattr(request.state, "principal", None)
    client = request.client
    ORIGIN.set(
        Origin(
            actor=(principal.user or "") if principal is not None else "",
            request_id=request_id_var.get(),
            addr=f"{client.host}:{client.port}" if client else "",
            host=request.headers.get("host", ""),
            method=request.method,
            useragent=request.headers.get("user-agent", "")[:MAX_USER_AGENT],
        )
    )


MAX_PAGE = 10_000
MAX_PAGE_PARAMETER = 1_000_000
DECIMAL_RE = re.compile(r"[0-9]{1,19}")


def decimal(value: str | None) -> int | None:
    """A plain ASCII decimal (at most 19 digits), else None.

    `str.isdigit()` is no test: it also holds for `²` and `①`, which `int()` refuses, and `int()` itself refuses
    numbers of more than 4300 digits.
    """
    return int(value) if value is not None and DECIMAL_RE.fullmatch(value) else None


def parse_page_size(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    size = decimal(value)
    if size is None or size > MAX_PAGE_PARAMETER:
        raise PaginationInvalid("n must be a non-negative integer", detail={"n": value[:50]})
    return size


def paginate(items: list[str], n: int | None, last: str | None) -> tuple[list[str], bool]:
    """Lexically ordered page after `last` (exclusive), at most `n` long; says whether more follow."""
    ordered = sorted(items)
    if last:
        ordered = [item for item in ordered if item > last]
    if n is None:
        n = MAX_PAGE
    return ordered[:n], len(ordered) > n and n > 0


def next_link(path: str, n: int | None, page: list[str]) -> str:
    size = n if n is not None else MAX_PAGE
    return f'<{path}?n={size}&last={page[-1]}>; rel="next"'
