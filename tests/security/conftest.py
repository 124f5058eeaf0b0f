"""Users, permissions, keys and certificates for the security tests, and registries configured with them.

Three users: alice may do everything, bob may pull and push `team/*`, carol may only pull `team/*`.
Passwords are hashed at bcrypt's lowest cost, so a login costs a millisecond here, not a tenth of a second.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import bcrypt
import pytest

from app.settings import Settings
from tests.conftest import filesystem_settings
from tests.security.pki import Pki, make_pki
from tests.support.daemons import Daemon, start_dockerd
from tests.support.registry_server import running_registry

PASSWORDS = {"alice": "alice-secret", "bob": "bob-secret", "carol": "carol-secret"}
ACCESS = """
groups:
  team: [bob]
rules:
  - users: [alice]
    repositories: ["*"]
    actions: ["*"]
  - groups: [team]
    repositories: ["team/*"]
    actions: [push]
  - users: [carol]
    repositories: ["team/*"]
    actions: [pull]
"""


def htpasswd_line(user: str, password: str) -> str:
    """An entry as `htpasswd -nbB` writes it (`$2y$`), at the lowest cost."""
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()
    return f"{user}:$2y${hashed[4:]}"


@pytest.fixture(scope="session")
def auth_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("auth")
    htpasswd = directory / "htpasswd"
    htpasswd.write_text("".join(htpasswd_line(user, password) + "\n" for user, password in PASSWORDS.items()))
    access = directory / "access.yaml"
    access.write_text(ACCESS)
    return {"htpasswd": htpasswd, "access": access}


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def auth_settings(tmp_path: Path, auth_files: dict[str, Path]) -> Callable[..., Settings]:
    """Filesystem-backed settings with htpasswd and the rules above, plus whatever the test adds."""

    def make(**extra: object) -> Settings:
        extra = {"auth_htpasswd": auth_files["htpasswd"], "auth_access": auth_files["access"], **extra}
        return filesystem_settings(tmp_path, **extra)

    return make


@pytest.fixture
def serve() -> Iterator[Callable[[Settings], str]]:
    """Start registries for a test (several if it likes); all stop when it ends."""
    with ExitStack() as stack:
        yield lambda settings: stack.enter_context(running_registry(settings))


@pytest.fixture(scope="module")
def dockerd() -> Iterator[Daemon]:
    """A private docker daemon for the client tests of one module."""
    daemon = start_dockerd()
    yield daemon
    daemon.stop()
