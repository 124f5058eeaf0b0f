"""Request-scoped access to the long-lived registry, and small helpers shared by the routers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.errors import PaginationInvalid
from app.registry import Registry


def get_registry(request: Request) -> Registry:
    return request.app.state.registry


RegistryDep = Annotated[Registry, Depends(get_registry)]

MAX_PAGE = 10_000


def parse_page_size(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    if not value.isdigit() or int(value) > 1_000_000:
        raise PaginationInvalid("n must be a non-negative integer", detail={"n": value[:50]})
    return int(value)


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
