"""Service configuration, read once at start-up from `REGISTRY_*` environment variables or a `.env` file."""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from ipaddress import IPv4Network, IPv6Address, IPv6Network, ip_network
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MiB = 1024 * 1024
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
HOST_NAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")
PREFIX = "REGISTRY_"
PEER_URL = re.compile(r"(?:dns\+)?https?://(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]):\d{1,5}")  # a replica's base URL
MIN_PEER_SECRET = 16
ENV_FILE = ".env"
STORJ_GATEWAY = "https://gateway.storjshare.io"
SETTINGS_DOC = "docs/settings.md"
# What Kubernetes sets in every pod of a namespace holding a Service named `registry` (service links): not ours.
KUBERNETES_SERVICE_LINK = re.compile(r"REGISTRY_(SERVICE_HOST|SERVICE_PORT(_\w+)?|PORT(_\d+_(TCP|UDP|SCTP)(_\w+)?)?)")


class OidcIssuer(BaseModel):
    """One trusted issuer of workload ID tokens (an entry of REGISTRY_AUTH_OIDC_ISSUERS, see app/auth/oidc.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    issuer: str = Field(min_length=1)  # compared with the token's `iss` exactly
    audience: str = Field(min_length=1)  # the `aud` the token must name: the job asks its issuer for it
    jwks_file: Path | None = None  # keys from this file instead of the issuer's discovery document
    refresh_seconds: float = Field(default=60, ge=1)  # least time between two key fetches (unknown `kid`)

    @model_validator(mode="after")
    def _keys_travel_safely(self) -> OidcIssuer:
        url = urlsplit(self.issuer)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"issuer {self.issuer!r} must be an http(s) URL")
        if url.scheme == "http" and self.jwks_file is None and url.hostname not in LOOPBACK_HOSTS:
            raise ValueError(f"issuer {self.issuer!r}: keys fetched over plain http could be forged; use https")
        return self


class SettingsError(Exception):
    """A setting is missing or wrong; the message, one line, names each offending variable."""

    @classmethod
    def naming(cls, variable: str, problem: object) -> SettingsError:
        return cls(f"invalid configuration: {variable}: {problem}")


class EventEndpoint(BaseModel):
    """One receiver of registry events (an entry of REGISTRY_EVENTS_ENDPOINTS, see app/events)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")  # metric label and spool directory
    url: str = Field(pattern=r"^https?://")
    headers: dict[str, str] = Field(default_factory=dict)  # e.g. Authorization for the receiver
    secret: str = ""  # HMAC-SHA256 key: the body's signature goes in X-Registry-Signature-256
    events: tuple[str, ...] = ("*",)  # patterns over event kinds (manifest.push, tag.delete, gc.delete, ...)
    repositories: tuple[str, ...] = ("*",)  # patterns over repository names
    timeout_seconds: float = Field(default=5, gt=0, le=300)
    max_pending: int = Field(default=10_000, ge=1)  # queued events past this are dropped (and counted)
    max_backoff_seconds: float = Field(default=60, gt=0, le=3600)  # longest wait between two tries


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=PREFIX, env_file=ENV_FILE, extra="ignore")

    # Where `serve` listens (its --host and --port override these). Not REGISTRY_PORT: Kubernetes sets that to
    # `tcp://…` in every pod of a namespace holding a Service named `registry`.
    listen_host: str = "127.0.0.1"
    listen_port: int = Field(default=5000, ge=1, le=65535)

    storage: Literal["filesystem", "s3"] = "filesystem"
    data_dir: Path = Path("./data")
    staging_dir: Path = Path("./staging")

    s3_endpoint: str = STORJ_GATEWAY
    s3_bucket: str = ""
    s3_prefix: str = ""
    s3_access_key: str = ""
    s3_secret_key: str = ""
    s3_region: str = "global"
    s3_part_size: int = Field(default=64 * MiB, ge=5 * MiB, le=5 * 1024 * MiB)
    s3_max_concurrency: int = Field(default=4, ge=1, le=64)
    s3_max_attempts: int = Field(default=8, ge=1, le=50)

    public_url: str = ""
    max_manifest_bytes: int = Field(default=4 * MiB, ge=1024)
    max_manifest_descriptors: int = Field(default=1000, ge=1)
    # Hosts a manifest's descriptor `urls` may name (comma-separated; empty: a manifest with `urls` is refused);
    # a non-distributable layer with such urls need not be in the repository (see app/registry/formats.py).
    manifest_urls_allow: Annotated[frozenset[str], NoDecode] = frozenset()
    # Accept an index or manifest whose children or blobs are absent (a mirror of one platform of an index).
    sparse_manifests: bool = False
    delete_enabled: bool = False
    policy: Path | None = None  # lifecycle rules: immutable tags, retention (see app/registry/policy.py)
    gc_watch_seconds: float = Field(default=10, gt=0, le=300)  # how often each replica looks for a gc run
    upload_max_age_seconds: float = Field(default=24 * 3600, gt=0)

    # Operations: log format, and the graceful stop on SIGTERM (see app/lifecycle.py).
    log_format: Literal["text", "json"] = "text"
    shutdown_drain_seconds: float = Field(default=0, ge=0, le=600)
    shutdown_grace_seconds: float = Field(default=30, ge=0, le=3600)

    # Who may push (see app/auth): htpasswd users, bearer tokens, per-repository rules.
    auth_htpasswd: Path | None = None
    auth_access: Path | None = None
    auth_anonymous_pull: bool = False
    auth_max_failures: int = Field(default=10, ge=0)
    auth_token_enabled: bool = False
    auth_token_realm: str = ""
    auth_token_service: str = "storj-registry"
    auth_token_issuer: str = "storj-registry"
    auth_token_key: Path | None = None
    auth_token_ttl: int = Field(default=300, ge=30, le=86400)
    auth_token_public_key: Path | None = None
    auth_token_jwks: Path | None = None
    auth_oidc_issuers: tuple[OidcIssuer, ...] = ()  # JSON list of OidcIssuer in the environment

    # Events for receivers that watch the registry (see app/events), and an audit log of the same events.
    events_endpoints: tuple[EventEndpoint, ...] = ()  # JSON list of EventEndpoint in the environment
    events_audit_log: Path | None = None  # JSON lines, one per event; /dev/stdout works in a container

    # The network edge: HTTPS, reverse proxies, and limits on what one client may send.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    service_url: str = ""
    trusted_proxies: Annotated[tuple[IPv4Network | IPv6Network, ...], NoDecode] = ()
    max_blob_bytes: int = Field(default=10 * 1024 * MiB, ge=1)
    staging_min_free_bytes: int = Field(default=512 * MiB, ge=0)
    max_uploads_per_client: int = Field(default=64, ge=0)
    max_sessions_per_client: int = Field(default=256, ge=0)
    upload_idle_timeout: float = Field(default=60, gt=0)
    min_body_rate: int = Field(default=1024, ge=0)
    request_head_timeout: float = Field(default=20, gt=0)
    max_header_bytes: int = Field(default=64 * 1024, ge=4096)
    share_blobs: bool = True
    share_min_bytes: int = Field(default=8 * 1024 * 1024, ge=0)
    publish_in_background: bool = True

    # several replicas (app/cluster/): who the others are, how they reach this one, what proves a peer
    peers: str = ""  # base URLs, comma-separated, or dns+http://NAME:PORT (a headless Service)
    advertise_url: str = ""
    peer_secret: str = ""
    peers_refresh_seconds: float = Field(default=5, gt=0, le=300)

    @field_validator("storage", "log_format", mode="before")
    @classmethod
    def _any_case(cls, value: object) -> object:
        """`REGISTRY_STORAGE=S3` means s3: these are names of things, not case-sensitive words."""
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("s3_prefix")
    @classmethod
    def _normalise_prefix(cls, value: str) -> str:
        value = value.strip("/")
        if any(part in ("", ".", "..") for part in value.split("/")) and value:
            raise ValueError("must be a plain key prefix without empty, '.' or '..' segments")
        return value

    @field_validator("public_url", "service_url", "auth_token_realm")
    @classmethod
    def _check_public_url(cls, value: str) -> str:
        value = value.rstrip("/")
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_proxies(cls, value: object) -> object:
        """`10.0.0.0/8, 192.168.1.1` in the environment: a comma-separated list of CIDRs or addresses."""
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list | tuple):
            raise ValueError("must be comma-separated addresses or CIDRs")
        try:
            return tuple(ip_network(part, strict=False) for part in value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"must be comma-separated addresses or CIDRs ({exc})") from None

    @field_validator("manifest_urls_allow", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        """`cdn.example.com, mcr.microsoft.com`: host names, compared with a URL's host in lower case."""
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list | tuple | set | frozenset) or not all(isinstance(h, str) for h in value):
            raise ValueError("must be comma-separated host names")
        hosts = frozenset(host.lower() for host in value)
        if any(not HOST_NAME.fullmatch(host) for host in hosts):
            raise ValueError("must be comma-separated host names (no scheme, port or path)")
        return hosts

    @model_validator(mode="after")
    def _auth_is_coherent(self) -> Settings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("REGISTRY_TLS_CERT and REGISTRY_TLS_KEY go together")
        if self.auth_token_public_key and self.auth_token_jwks:
            raise ValueError("set REGISTRY_AUTH_TOKEN_PUBLIC_KEY or REGISTRY_AUTH_TOKEN_JWKS, not both")
        external = self.auth_token_public_key or self.auth_token_jwks
        if external and not self.auth_token_enabled:
            raise ValueError("an external token issuer needs REGISTRY_AUTH_TOKEN_ENABLED=true")
        if external and not self.auth_token_realm:
            raise ValueError("an external token issuer needs REGISTRY_AUTH_TOKEN_REALM (its token endpoint)")
        logins = self.auth_htpasswd or self.auth_oidc_issuers
        if self.auth_token_enabled and not (external or logins):
            raise ValueError(
                "REGISTRY_AUTH_TOKEN_ENABLED needs REGISTRY_AUTH_HTPASSWD, REGISTRY_AUTH_OIDC_ISSUERS "
                "or an external issuer"
            )
        if self.auth_access and not logins:
            raise ValueError("REGISTRY_AUTH_ACCESS needs REGISTRY_AUTH_HTPASSWD or REGISTRY_AUTH_OIDC_ISSUERS")
        self._oidc_is_coherent(bool(external))
        return self

    def _oidc_is_coherent(self, external: bool) -> None:
        if not self.auth_oidc_issuers:
            return
        if not self.auth_access:
            raise ValueError("REGISTRY_AUTH_OIDC_ISSUERS needs REGISTRY_AUTH_ACCESS (claim rules say who may push)")
        if external:
            raise ValueError("REGISTRY_AUTH_OIDC_ISSUERS needs this service to issue tokens, not an external issuer")
        names = [entry.issuer for entry in self.auth_oidc_issuers]
        if len(set(names)) != len(names):
            raise ValueError("REGISTRY_AUTH_OIDC_ISSUERS lists an issuer twice")

    @field_validator("events_endpoints")
    @classmethod
    def _unique_endpoint_names(cls, value: tuple[EventEndpoint, ...]) -> tuple[EventEndpoint, ...]:
        names = [endpoint.name for endpoint in value]
        if len(set(names)) != len(names):
            raise ValueError("endpoint names must be unique (they name metrics and spool directories)")
        return value

    @property
    def auth_enabled(self) -> bool:
        return bool(self.auth_htpasswd or self.auth_token_enabled or self.auth_oidc_issuers)

    @field_validator("s3_endpoint")
    @classmethod
    def _check_endpoint(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("peers")
    @classmethod
    def _check_peers(cls, value: str) -> str:
        parts = [_bracketed(part.strip().rstrip("/")) for part in value.split(",") if part.strip()]
        if any(part.startswith("dns+") for part in parts) and len(parts) > 1:
            raise ValueError("a dns+http:// name stands alone (it resolves to every replica)")
        for part in parts:
            if not PEER_URL.fullmatch(part):
                raise ValueError(f"{part!r} is not http://HOST:PORT, https://HOST:PORT or dns+http://NAME:PORT")
        return ",".join(parts)

    @field_validator("advertise_url")
    @classmethod
    def _check_advertise_url(cls, value: str) -> str:
        value = _bracketed(value.strip().rstrip("/"))
        if value and not PEER_URL.fullmatch(value):
            raise ValueError("must be this replica's base URL, http://HOST:PORT or https://HOST:PORT")
        return value

    @model_validator(mode="after")
    def _peers_are_coherent(self) -> Settings:
        if not self.peers:
            return self
        if not self.advertise_url or self.advertise_url.startswith("dns+"):
            raise ValueError("REGISTRY_PEERS needs REGISTRY_ADVERTISE_URL (this replica's URL, as its peers reach it)")
        if len(self.peer_secret) < MIN_PEER_SECRET:
            raise ValueError(f"REGISTRY_PEERS needs REGISTRY_PEER_SECRET (at least {MIN_PEER_SECRET} characters)")
        return self

    @model_validator(mode="after")
    def _s3_needs_credentials(self) -> Settings:
        if self.storage == "s3":
            missing = [
                f"REGISTRY_{name.upper()}"
                for name in ("s3_bucket", "s3_access_key", "s3_secret_key")
                if not getattr(self, name)
            ]
            if missing:
                raise ValueError(f"REGISTRY_STORAGE=s3 needs {', '.join(missing)}")
        return self


def _bracketed(url: str) -> str:
    """`http://fd00::1:5000` as `http://[fd00::1]:5000`: a pod's IPv6 address, put in a URL by the chart
    (`http://$(POD_IP):PORT`), in the form its peers find it under (app/cluster/members.py)."""
    scheme, separator, rest = url.partition("://")
    host, _, port = rest.rpartition(":")
    try:
        address = IPv6Address(host)
    except ValueError:
        return url
    return f"{scheme}{separator}[{address.compressed}]:{port}"


def load_settings(**overrides: object) -> Settings:
    """Build settings, turning pydantic's report into one line per wrong variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            field, *inside = [str(part) for part in error["loc"]] or [""]
            name = f"REGISTRY_{field.upper()}" if field else "settings"
            name += "".join(f"[{part}]" if part.isdigit() else f".{part}" for part in inside)  # in a JSON value
            lines.append(f"{name}: {error['msg']}")
        raise SettingsError("invalid configuration: " + "; ".join(lines)) from None


def variable_names() -> list[str]:
    """Every REGISTRY_* variable a setting reads."""
    return sorted(f"{PREFIX}{name.upper()}" for name in Settings.model_fields)


def unknown_variables(environ: Mapping[str, str] | None = None, env_file: Path = Path(ENV_FILE)) -> list[str]:
    """A sentence for each REGISTRY_* variable that no setting reads, with the closest known name.

    Settings ignore unknown variables, so `REGISTRY_STORGE=s3` would otherwise leave the filesystem store in use
    without a word. Kubernetes' service-link variables (`REGISTRY_PORT=tcp://…`) are not ours and pass unremarked.
    """
    environ = os.environ if environ is None else environ
    found = [(name, "") for name in environ if name.upper().startswith(PREFIX)]
    found = [(name, where) for name, where in found if not KUBERNETES_SERVICE_LINK.fullmatch(name.upper())]
    found += [(name, f" in {env_file}") for name in _dotenv_names(env_file)]
    known = [name.removeprefix(PREFIX) for name in variable_names()]
    sentences = []
    for name, where in found:
        suffix = name.upper().removeprefix(PREFIX)
        if suffix in known:
            continue
        close = difflib.get_close_matches(suffix, known, n=1)  # without the prefix, which every name shares
        hint = f" (did you mean {PREFIX}{close[0]}?)" if close else f" (the settings are listed in {SETTINGS_DOC})"
        sentences.append(f"{name}{where} is not a setting and is ignored{hint}")
    return sentences


def _dotenv_names(env_file: Path) -> list[str]:
    from dotenv import dotenv_values  # pydantic-settings reads .env with it too

    if not env_file.is_file():
        return []
    return [name for name in dotenv_values(env_file) if name.upper().startswith(PREFIX)]


def store_line(settings: Settings) -> str:
    """Where this process reads and writes, in one line: the store, the staging directory, the public URL."""
    staging = f"staging {settings.staging_dir.resolve()}"
    public = f"public URL {settings.public_url}" if settings.public_url else "no public URL (REGISTRY_PUBLIC_URL)"
    return f"store: {store_location(settings)}; {staging}; {public}"


def store_location(settings: Settings) -> str:
    """The store in words: the data directory's absolute path, or the endpoint, bucket and prefix."""
    if settings.storage == "filesystem":
        return f"filesystem {settings.data_dir.resolve()}"
    prefix = f" prefix {settings.s3_prefix}/" if settings.s3_prefix else ""
    endpoint = settings.s3_endpoint
    if "s3_endpoint" not in settings.model_fields_set:
        endpoint += " (REGISTRY_S3_ENDPOINT not set: Storj's public gateway)"
    return f"s3 bucket {settings.s3_bucket}{prefix} at {endpoint}"
