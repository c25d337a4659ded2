from __future__ import annotations

import pytest

from recorder.errors import ConfigError
from recorder.settings import listen_socket, load_settings, parse_listen, redact_url


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
def test_a_bad_interval_flag_names_the_flag(interval: str) -> None:
    with pytest.raises(ConfigError, match=r"^--interval: ") as caught:
        load_settings(interval_seconds=interval)
    assert "RECORDER_INTERVAL" not in str(caught.value)


@pytest.mark.parametrize("interval", ["0", "-5", "0s", "soon"])
def test_a_bad_interval_variable_names_the_variable(
    interval: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECORDER_INTERVAL", interval)
    with pytest.raises(ConfigError, match=r"^RECORDER_INTERVAL: ") as caught:
        load_settings()
    assert "--interval" not in str(caught.value)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("RECORDER_BLOCK", "10s", "RECORDER_BLOCK: must be at least 1m, got 10s"),
        ("RECORDER_FULL_RESOLUTION_RETENTION", "0", "must be longer than 0s, got 0s"),
        ("RECORDER_STATISTICS_RETENTION", "1d", "must be at least the full-resolution"),
        ("RECORDER_MAX_POINTS", "many", "RECORDER_MAX_POINTS: must be a whole number, got 'many'"),
        ("RECORDER_MAX_POINTS", "0", "RECORDER_MAX_POINTS: must be more than 0, got 0"),
        ("RECORDER_METRICS_CONTAINERS", "maybe", "must be true or false, got 'maybe'"),
        ("RECORDER_BUFFER_MAX_BYTES", "12Q", "RECORDER_BUFFER_MAX_BYTES: invalid quantity '12Q'"),
        ("RECORDER_LOG_LEVEL", "LOUD", "RECORDER_LOG_LEVEL: 'LOUD' is not a log level: use DEBUG"),
        ("RECORDER_LISTEN", "8080", "RECORDER_LISTEN: must be HOST:PORT"),
        ("RECORDER_API_URL", "http://[::1", "RECORDER_API_URL: must be an http:// or https://"),
        ("RECORDER_API_URL", "http://api:99999", "RECORDER_API_URL: must be an http:// or"),
    ],
)
def test_messages_are_ours_never_pydantic_text(
    variable: str, value: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    text = str(caught.value)
    assert message in text
    for pydantic in ("validation error", "Value error", "Input should", "input_value", "type="):
        assert pydantic not in text


def test_a_bad_database_or_api_url_never_echoes_its_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RECORDER_API_URL", "ftp://user:s3cret@host?token=s3cret")
    with pytest.raises(ConfigError, match=r"^RECORDER_API_URL: must be an http") as caught:
        load_settings()
    assert "s3cret" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("sqlite:///recorder.db", "sqlite:///recorder.db"),
        ("sqlite:///a@b:c.db", "sqlite:///a@b:c.db"),
        ("postgresql+psycopg://u:s3cret@db:5432/rec", "postgresql+psycopg://u:***@db:5432/rec"),
        (
            "postgresql+psycopg://u@db/rec?password=s3cret",
            "postgresql+psycopg://u@db/rec?password=***",
        ),
        (
            "postgresql://u@db/rec?sslmode=require&sslpassword=s3cret&options=-c%20a",
            "postgresql://u@db/rec?sslmode=require&sslpassword=***&options=-c%20a",
        ),
        ("postgresql://u:p/s3cret@db/rec", "postgresql://u:***@db/rec"),
        ("http://user:s3cret@proxy:3128", "http://user:***@proxy:3128"),
        ("https://api?Token=s3cret&x=1", "https://api?Token=***&x=1"),
    ],
)
def test_redact_url_hides_passwords_wherever_they_are_given(url: str, shown: str) -> None:
    assert redact_url(url) == shown


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


def test_listen_socket_says_the_address_is_taken_in_one_line() -> None:
    taken = listen_socket("127.0.0.1", 0)
    port = taken.getsockname()[1]
    try:
        with pytest.raises(ConfigError) as caught:
            listen_socket("127.0.0.1", port)
    finally:
        taken.close()
    assert str(caught.value) == (
        f"cannot listen on 127.0.0.1:{port}: address already in use (is another recorder "
        "running? choose another with --listen)"
    )
