from __future__ import annotations

import pytest

from recorder.errors import ConfigError
from recorder.settings import load_settings, parse_listen


def test_environment_with_units_and_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECORDER_INTERVAL", "1m30s")
    monkeypatch.setenv("RECORDER_NAMESPACE", "shop, kube-system")
    monkeypatch.setenv("RECORDER_DATABASE_URL", "postgresql+psycopg://u:s3cret@db/rec")
    settings = load_settings()
    assert settings.interval_seconds == 90.0
    assert settings.namespace == ["shop", "kube-system"]
    assert "s3cret" not in repr(settings)
    assert settings.database_url.get_secret_value().endswith("@db/rec")


def test_flags_override_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECORDER_INTERVAL", "60")
    monkeypatch.setenv("RECORDER_LISTEN", "127.0.0.1:1")
    settings = load_settings(interval_seconds="0.5", listen=None)
    assert settings.interval_seconds == 0.5
    assert settings.listen == "127.0.0.1:1"


def test_short_interval_is_accepted_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    load_settings(interval_seconds="2s").warn_about_interval()
    assert "shorter than metrics-server's usual resolution" in caplog.text


@pytest.mark.parametrize("interval", ["0", "-5", "0s", "soon", ""])
def test_bad_interval_is_a_clear_config_error(interval: str) -> None:
    with pytest.raises(ConfigError, match="RECORDER_INTERVAL"):
        load_settings(interval_seconds=interval)


def test_unknown_setting_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError):
        load_settings(databse_url="typo")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.0.1:8080", ("127.0.0.1", 8080)), ("[::1]:9", ("::1", 9)), (":80", ("0.0.0.0", 80))],
)
def test_listen(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["8080", "host:", "host:99999", "host:x"])
def test_bad_listen(text: str) -> None:
    with pytest.raises(ConfigError, match="listen"):
        parse_listen(text)
