"""HTTPS for the recorder's own server: served with the given certificate, and a renewed
certificate taken for new connections without a restart (``tls.CertificateReloader``)."""

from __future__ import annotations

import os
import socket
import ssl
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from recorder.api.app import AppDeps, create_app
from recorder.api.tls import CertificateReloader
from recorder.simulator.tls import CertificateAuthority
from recorder.store import Store
from tests.api_support import write_history
from tests.integration.test_api_limits import running

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def _peer_certificate(port: int, ca_pem: bytes) -> bytes:
    context = ssl.create_default_context(cadata=ca_pem.decode())
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert tls.recv(64).startswith(b"HTTP/1.1 200")
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def _write_pair(folder: Path, ca: CertificateAuthority, stamp: int) -> tuple[Path, Path]:
    pair = ca.issue_server()
    cert, key = folder / "tls.crt", folder / "tls.key"
    cert.write_bytes(pair.cert_pem)
    key.write_bytes(pair.key_pem)
    for path in (cert, key):
        os.utime(path, ns=(stamp, stamp))
    return cert, key


def test_https_with_a_certificate_reloaded_on_change(store: Store, tmp_path: Path) -> None:
    ca = CertificateAuthority.generate()
    cert, key = _write_pair(tmp_path, ca, 10**18)
    app = create_app(AppDeps(write_history(store), CollectorRegistry()))
    with running(app, tls_cert_file=str(cert), tls_key_file=str(key), tls_check_seconds=0.05) as (
        url,
        server,
    ):
        port = int(url.rsplit(":", 1)[1])
        first = _peer_certificate(port, ca.cert_pem)
        assert first == ssl.PEM_cert_to_DER_cert(cert.read_text())
        cert.write_text("not a certificate")  # a renewal caught half-way
        os.utime(cert, ns=(2 * 10**18, 2 * 10**18))
        time.sleep(0.2)
        assert _peer_certificate(port, ca.cert_pem) == first  # the old one stays in force
        _write_pair(tmp_path, ca, 3 * 10**18)
        deadline = time.monotonic() + 5
        while (renewed := _peer_certificate(port, ca.cert_pem)) == first:
            assert time.monotonic() < deadline, "the renewed certificate was not taken"
            time.sleep(0.05)
        assert renewed == ssl.PEM_cert_to_DER_cert(cert.read_text())
        assert isinstance(server.certificates, CertificateReloader)
        assert server.certificates.reloads == 1
