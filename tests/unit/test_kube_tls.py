"""TLS material (recorder/kube/tls.py): key material never left on disk, clear errors."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from recorder.errors import ConfigError
from recorder.kube.tls import ClientCertificate, TlsSettings, build_ssl_context
from tests.kube_support import PEM_CA


def test_client_key_is_not_left_on_disk(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    pair = PEM_CA.issue_client("me")
    build_ssl_context(
        TlsSettings(ca_pem=PEM_CA.cert_pem), ClientCertificate(pair.cert_pem, pair.key_pem, "t")
    )
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ConfigError, match="cannot be used"):
        build_ssl_context(TlsSettings(), ClientCertificate(pair.cert_pem, b"junk", "the test"))
    assert list(tmp_path.iterdir()) == []


def test_a_ca_that_is_not_pem_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="holds no usable PEM certificate"):
        build_ssl_context(TlsSettings(ca_pem=b"nope", ca_source="the test CA"), None)
