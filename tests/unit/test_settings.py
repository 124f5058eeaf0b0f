import pytest

from app.settings import SettingsError, load_settings, unknown_variables
from app.storage.s3 import client_config


def test_defaults_are_the_embedded_filesystem_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REGISTRY_STORAGE", raising=False)
    settings = load_settings()
    assert settings.storage == "filesystem"
    assert settings.max_manifest_bytes == 4 * 1024 * 1024
    assert settings.delete_enabled is False


def test_a_wrong_setting_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGISTRY_STORAGE", "floppy")
    with pytest.raises(SettingsError, match="REGISTRY_STORAGE"):
        load_settings()


@pytest.mark.parametrize("spelling", ["S3", " s3 ", "S3\n"])
def test_the_backend_name_is_case_insensitive(monkeypatch: pytest.MonkeyPatch, spelling: str) -> None:
    for name, value in {"STORAGE": spelling, "S3_BUCKET": "b", "S3_ACCESS_KEY": "k", "S3_SECRET_KEY": "s"}.items():
        monkeypatch.setenv(f"REGISTRY_{name}", value)
    monkeypatch.setenv("REGISTRY_LOG_FORMAT", "JSON")
    settings = load_settings()
    assert (settings.storage, settings.log_format) == ("s3", "json")


def test_unknown_variables_are_named_with_the_closest_setting(tmp_path) -> None:
    (tmp_path / ".env").write_text("# comment\nREGISTRY_PUBLIC_ULR=https://x\nOTHER=1\n")
    environ = {"REGISTRY_STORGE": "s3", "REGISTRY_STORAGE": "s3", "REGISTRY_SERVICE_HOST": "10.0.0.1", "HOME": "/"}
    environ |= {"REGISTRY_PORT_5000_TCP_ADDR": "10.0.0.1", "REGISTRY_ZZZZ": "1"}
    assert unknown_variables(environ, tmp_path / ".env") == [
        "REGISTRY_STORGE is not a setting and is ignored (did you mean REGISTRY_STORAGE?)",
        "REGISTRY_ZZZZ is not a setting and is ignored (the settings are listed in docs/settings.md)",
        f"REGISTRY_PUBLIC_ULR in {tmp_path / '.env'} is not a setting and is ignored "
        "(did you mean REGISTRY_PUBLIC_URL?)",
    ]


def test_s3_without_credentials_names_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGISTRY_STORAGE", "s3")
    monkeypatch.setenv("REGISTRY_S3_BUCKET", "images")
    with pytest.raises(SettingsError, match="REGISTRY_S3_ACCESS_KEY, REGISTRY_S3_SECRET_KEY"):
        load_settings()


@pytest.mark.parametrize("prefix", ["../x", "a//b", "a/./b"])
def test_prefix_cannot_climb_out_of_the_bucket(monkeypatch: pytest.MonkeyPatch, prefix: str) -> None:
    monkeypatch.setenv("REGISTRY_S3_PREFIX", prefix)
    with pytest.raises(SettingsError, match="REGISTRY_S3_PREFIX"):
        load_settings()


def test_settings_are_read_from_a_dotenv_file(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("REGISTRY_DELETE_ENABLED=true\nREGISTRY_MAX_MANIFEST_BYTES=2048\n")
    settings = load_settings()
    assert settings.delete_enabled is True
    assert settings.max_manifest_bytes == 2048


def test_s3_client_is_configured_for_the_storj_gateway() -> None:
    """Storj rejects aws-chunked trailing checksums; plain-http tests cannot see that, so check the config."""
    config = client_config(load_settings(storage="s3", s3_bucket="b", s3_access_key="k", s3_secret_key="s"))
    assert config.request_checksum_calculation == "when_required"
    assert config.response_checksum_validation == "when_required"
    assert config.s3["addressing_style"] == "path"
    assert config.region_name == "global"
    assert config.retries["mode"] == "standard"


def test_s3_bodies_are_signed_only_where_tls_does_not_protect_them() -> None:
    """Hashing every uploaded byte for the signature costs a CPU pass per byte; over https it buys nothing."""
    credentials = {"storage": "s3", "s3_bucket": "b", "s3_access_key": "k", "s3_secret_key": "s"}
    assert client_config(load_settings(**credentials)).s3["payload_signing_enabled"] is False
    plain = load_settings(**credentials, s3_endpoint="http://127.0.0.1:9000")
    assert client_config(plain).s3["payload_signing_enabled"] is True
