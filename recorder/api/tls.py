"""HTTPS for the recorder's own server: the certificate and key files, read again when they
change (cert-manager renews a Secret, the kubelet updates the mounted files).

``CertificateReloader.check()`` compares the files' modification stamps with the last ones
loaded; on a change it loads the pair into a fresh context first, and only if that works into
the server's live ``SSLContext``, which new connections then use (open ones keep theirs). A
half-written or mismatched pair is logged and the old certificate stays in force.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl

__all__ = ["CertificateReloader", "check_pair"]

log = logging.getLogger(__name__)

CHECK_SECONDS = 10.0


def check_pair(cert_file: str, key_file: str) -> None:
    """Raise ``ssl.SSLError``/``OSError`` unless the files hold a certificate and its key."""
    ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert_file, key_file)


def _stamp(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class CertificateReloader:
    def __init__(self, context: ssl.SSLContext, cert_file: str, key_file: str) -> None:
        self.context = context
        self.cert_file = cert_file
        self.key_file = key_file
        self.reloads = 0
        self._stamps = (_stamp(cert_file), _stamp(key_file))
        self._failing: str | None = None

    def check(self) -> bool:
        """Load the files again if they changed; True when a new pair is now in force."""
        stamps = (_stamp(self.cert_file), _stamp(self.key_file))
        if stamps == self._stamps:
            return False
        try:
            check_pair(self.cert_file, self.key_file)
            self.context.load_cert_chain(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
            if problem != self._failing:
                self._failing = problem
                log.error(
                    "the TLS certificate or key changed but cannot be loaded (%s); the old "
                    "certificate stays in force",
                    problem,
                )
            return False
        self._stamps, self._failing = stamps, None
        self.reloads += 1
        log.info("loaded the renewed TLS certificate %s", self.cert_file)
        return True

    async def run(self, interval_seconds: float = CHECK_SECONDS) -> None:
        """Check every ``interval_seconds`` until cancelled."""
        while True:
            await asyncio.sleep(interval_seconds)
            self.check()
