"""Helpers for the deployment tests: repository paths and the rule for missing tools."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = REPO_ROOT / "helm" / "storj-registry"
DOCKERFILE = REPO_ROOT / "Dockerfile"


def in_ci() -> bool:
    """CI runs with CI=true: there a missing tool is a broken setup, not a reason to skip."""
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def missing_tool(what: str, install: str) -> None:
    """Fail under CI, skip elsewhere, always saying how to install the tool."""
    message = f"{what} is not available: `pip install {install}` (it is in the test extras)"
    if in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message, allow_module_level=True)


def require_module(module: str, package: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError:
        missing_tool(f"Python module {module!r}", package)
        raise  # unreachable: missing_tool always raises
