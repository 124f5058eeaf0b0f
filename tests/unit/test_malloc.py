"""The arena limit that keeps RSS flat in the layer size (measured by bench/, see docs/benchmarks.md)."""

from __future__ import annotations

from typing import Any

import pytest

from app import malloc


class FakeLibc:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def mallopt(self, option: int, value: int) -> int:
        self.calls.append((option, value))
        return 1


def test_two_arenas_unless_the_operator_chose(monkeypatch: pytest.MonkeyPatch) -> None:
    libc = FakeLibc()
    monkeypatch.setattr(malloc.ctypes, "CDLL", lambda name: libc)
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    malloc.limit_malloc_arenas()
    assert libc.calls == [(malloc.M_ARENA_MAX, 2)]

    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    malloc.limit_malloc_arenas()
    assert len(libc.calls) == 1


def test_a_c_library_without_mallopt_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> Any:
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(malloc.ctypes, "CDLL", missing)
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    malloc.limit_malloc_arenas()
