"""The HTTP server: uvicorn with the limits uvicorn lacks, and a graceful stop on SIGTERM.

``build_server(app, host, port)`` returns a ``RecorderServer`` (a ``uvicorn.Server``) that

- caps connections: beyond ``max_connections`` a new connection first closes the longest-idle
  ones (waiting for a request, or between keep-alive requests), so idle clients can never
  lock out a probe; if every connection is busy, requests are answered 503 (uvicorn's
  ``limit_concurrency``), and connections beyond a small overflow are dropped at once so the
  process never runs out of file descriptors;
- closes a connection whose request head is not complete ``header_timeout_seconds`` after its
  first byte (or after the connect), and one whose request body stalls as long: uvicorn has no
  such timeout, so a client dripping a header byte a second (slowloris) held a connection
  forever, and 1,100 idle connections made the server unreachable;
- closes idle keep-alive connections after ``keep_alive_seconds``; answers 400 to a request
  head still incomplete after ``max_header_bytes`` (h11's bound on buffered data; a whole head
  arriving in one read, at most 256 KiB, is parsed);
- raises the soft open-files limit to the hard one and fits the listen backlog (which is also
  how many connections asyncio accepts in one go, before closed ones free their descriptors)
  and ``max_connections`` into it, lowering them when it is small: with 1,024 files, 1,100
  connections in a burst hit EMFILE, and asyncio then stopped accepting for a second;
- never writes a log storm: uvicorn's per-request warnings ("Exceeded concurrency limit.",
  "Invalid HTTP request received.") and the event loop's ``accept()`` errors (EMFILE) are let
  through a few times a minute, the rest counted; no access log;
- keeps full garbage collections short: the heap at startup is frozen (``gc.freeze()``), so
  a collection no longer stops every thread for 50+ ms to walk the libraries' objects;
- speaks HTTPS when given a certificate and key, and loads them again when they change
  (``tls.CertificateReloader``, checked every ``tls_check_seconds``);
- on SIGTERM or SIGINT stops gracefully and *returns* from ``run()``/``serve()`` (uvicorn
  re-raises the signal after its shutdown, which kills the process with 143 before the
  caller's cleanup runs). ``request_stop()`` does the same from any thread; a second signal
  stops without waiting for open requests; ``stop_signal`` tells which signal stopped it.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import resource
import signal
import socket
import threading
from collections import OrderedDict
from collections.abc import Generator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any, ClassVar

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from recorder.api.limits import LogLimiter, RateLimitFilter
from recorder.api.tls import CHECK_SECONDS, CertificateReloader

log = logging.getLogger(__name__)

DEFAULT_MAX_CONNECTIONS = 1000
DEFAULT_BACKLOG = 2048
FD_RESERVE = 128
"""File descriptors left for everything but client connections: the database, files,
the poller's connections to the Metrics API."""
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def raise_open_files_limit() -> int:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit; return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    unlimited = 1 << 20  # Linux' default nr_open: the most a process may have open
    if soft == resource.RLIM_INFINITY:
        return unlimited
    target = unlimited if hard == resource.RLIM_INFINITY else hard
    if soft >= target:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return soft
    return target


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    overflow: int = 64
    """Connections allowed beyond ``max_connections`` while every one is busy (they get 503);
    any more are closed as soon as they connect."""
    backlog: int = 2048
    """The listen queue, and how many connections asyncio accepts in one go."""
    header_timeout_seconds: float = 10.0
    body_timeout_seconds: float = 10.0


def _quiet_logger(level: int) -> logging.Logger:
    """A stand-in for ``uvicorn.error`` that passes on a few records per message a minute."""
    quiet = logging.Logger("uvicorn.error", level)
    quiet.parent = logging.getLogger("uvicorn.error")
    quiet.addFilter(RateLimitFilter())
    return quiet


class IdleConnections:
    """A server's connections that wait for a request, longest-waiting first (a slowloris
    client dripping a header stays where it started), and how many connections we closed
    that have not yet gone."""

    def __init__(self) -> None:
        self._idle: OrderedDict[GuardedH11Protocol, None] = OrderedDict()
        self.closing = 0

    def __len__(self) -> int:
        return len(self._idle)

    def add(self, connection: GuardedH11Protocol) -> None:
        self._idle.setdefault(connection, None)

    def discard(self, connection: GuardedH11Protocol) -> None:
        self._idle.pop(connection, None)

    def close_longest_idle(self, count: int, *, spare: object = None) -> int:
        """Close up to ``count`` idle connections, longest-waiting first, never ``spare``."""
        closed = 0
        while closed < count and self._idle:
            connection = next(iter(self._idle))
            if connection is spare:
                break  # the newest of all: nothing older is left
            connection.close()
            closed += 1
        return closed


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a request-head deadline, a body stall timeout and a
    connection cap that closes idle connections first. ``build_server`` makes a subclass
    carrying its ``limits``, its ``idle`` registry and its logger."""

    limits: ClassVar[ConnectionLimits] = ConnectionLimits()
    idle: ClassVar[IdleConnections] = IdleConnections()
    quiet_logger: ClassVar[logging.Logger] = _quiet_logger(logging.WARNING)

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.logger = self.quiet_logger
        self._read_timer: asyncio.TimerHandle | None = None
        self._closed_by_us = False

    def close(self) -> None:
        """Close the connection (whatever it is doing)."""
        self._cancel_read_timer()
        self.idle.discard(self)
        if not self.transport.is_closing():
            self.transport.close()
            if not self._closed_by_us:
                self._closed_by_us = True
                self.idle.closing += 1

    # --- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_read_timer(self.limits.header_timeout_seconds)
        self.idle.add(self)
        self._make_room()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_read_timer()
        self.idle.discard(self)
        if self._closed_by_us:
            self._closed_by_us = False
            self.idle.closing -= 1
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._after_input()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._after_input()

    # --- limits -------------------------------------------------------------------------------

    def _make_room(self) -> None:
        limits = self.limits
        excess = len(self.connections) - self.idle.closing - limits.max_connections
        if excess <= 0:
            return
        closed = self.idle.close_longest_idle(excess, spare=self)
        if closed:
            self.logger.warning(
                "closed %d idle connection(s) to stay within max_connections=%d; raise it "
                "if that many clients are legitimate",
                closed,
                limits.max_connections,
            )
        if excess - closed > limits.overflow:
            self.logger.warning(
                "refused a connection: %d are open and busy (max_connections=%d); raise it or "
                "add replicas if that many clients are legitimate",
                len(self.connections) - self.idle.closing - 1,
                limits.max_connections,
            )
            self.close()

    def _after_input(self) -> None:
        """Track whether the connection is idle, and keep the right read deadline for the
        state the client is in."""
        if self.transport.is_closing():
            self._cancel_read_timer()
            self.idle.discard(self)
            return
        state = self.conn.their_state
        if state is h11.IDLE and (self.cycle is None or self.cycle.response_complete):
            self.idle.add(self)
        else:
            self.idle.discard(self)
        if state is h11.IDLE:
            if self.timeout_keep_alive_task is not None:
                self._cancel_read_timer()  # between requests: uvicorn's keep-alive timeout
            elif self._read_timer is None:
                # the first bytes of a request head: it has header_timeout to complete
                self._arm_read_timer(self.limits.header_timeout_seconds)
        elif state is h11.SEND_BODY:
            self._arm_read_timer(self.limits.body_timeout_seconds)  # restarts on every chunk
        else:
            self._cancel_read_timer()

    def _arm_read_timer(self, seconds: float) -> None:
        self._cancel_read_timer()
        self._read_timer = self.loop.call_later(seconds, self._read_timed_out)

    def _cancel_read_timer(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _read_timed_out(self) -> None:
        self._read_timer = None
        if self.transport.is_closing():
            return
        state = self.conn.their_state
        if state is h11.SEND_BODY and self.flow.read_paused:
            # we stopped reading (the app is slow to consume the body), not the client
            self._arm_read_timer(self.limits.body_timeout_seconds)
        elif state is h11.SEND_BODY or (state is h11.IDLE and self.timeout_keep_alive_task is None):
            self.close()  # a request head or body that did not arrive in time


class RecorderServer(uvicorn.Server):
    """A uvicorn server that stops gracefully on SIGTERM/SIGINT and then returns."""

    def __init__(
        self,
        config: uvicorn.Config,
        *,
        idle: IdleConnections | None = None,
        freeze_startup_heap: bool = True,
        tls_check_seconds: float = CHECK_SECONDS,
    ) -> None:
        super().__init__(config)
        self.stop_signal: int | None = None
        self.idle = idle or IdleConnections()
        self.freeze_startup_heap = freeze_startup_heap
        self.tls_check_seconds = tls_check_seconds
        self.certificates: CertificateReloader | None = None
        self._logs = LogLimiter(burst=1)
        self._reloading: asyncio.Task[None] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        config = self.config
        if config.ssl is not None and config.ssl_certfile and config.ssl_keyfile:
            self.certificates = CertificateReloader(
                config.ssl, str(config.ssl_certfile), str(config.ssl_keyfile)
            )
            self._reloading = asyncio.create_task(
                self.certificates.run(self.tls_check_seconds), name="recorder-tls-reload"
            )
        if self.freeze_startup_heap:
            # Every full collection walked the ~110,000 objects of the imported libraries and
            # the app (50 ms here, with the GIL held): that was /livez' p99 under load.
            # Frozen, they are never collected again; what serving allocates still is.
            gc.collect()
            gc.freeze()

    def request_stop(self) -> None:
        """Begin a graceful stop: no new connections, open requests finish (at most
        ``graceful_shutdown_seconds``), then ``run()``/``serve()`` returns. Any thread."""
        self.should_exit = True

    @contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # Signals can only be handled in the main thread; elsewhere the caller stops us.
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self._on_signal) for sig in STOP_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        # unlike uvicorn, no signal is raised again: the caller's cleanup runs next

    def _on_signal(self, sig: int, _frame: FrameType | None) -> None:
        if self.stop_signal is not None:
            self.force_exit = True  # a second signal: stop without waiting for requests
        self.stop_signal = sig
        self.request_stop()

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        loop = asyncio.get_running_loop()
        previous = loop.get_exception_handler()
        loop.set_exception_handler(self._loop_exception)
        try:
            await super().serve(sockets)
        finally:
            loop.set_exception_handler(previous)
            if self._reloading is not None:
                self._reloading.cancel()

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message", ""))
        if "out of system resource" in message:  # accept() failed: EMFILE, ENFILE, ENOBUFS
            self.idle.close_longest_idle(max(1, len(self.idle) // 10))
        dropped = self._logs.allow(message)
        if dropped is None:
            return
        if dropped:
            context = {**context, "message": f"{message} ({dropped} more not logged)"}
        loop.default_exception_handler(context)


def build_server(
    app: Any,
    host: str,
    port: int,
    *,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    header_timeout_seconds: float = 10.0,
    body_timeout_seconds: float | None = None,
    keep_alive_seconds: int = 5,
    max_header_bytes: int = 16 * 1024,
    graceful_shutdown_seconds: int = 10,
    log_level: str = "warning",
    freeze_startup_heap: bool = True,
    tls_cert_file: str | None = None,
    tls_key_file: str | None = None,
    tls_check_seconds: float = CHECK_SECONDS,
) -> RecorderServer:
    """The uvicorn server for ``app`` on ``host:port``, with the limits above.

    ``body_timeout_seconds`` defaults to ``header_timeout_seconds``. ``freeze_startup_heap``
    moves everything allocated until the server listens out of the garbage collector's reach
    (``gc.freeze()``, process-wide): pass ``False`` where the process has other work whose
    startup garbage should still be collected. uvicorn's messages go
    to the ``uvicorn.error`` logger and from there through the process's logging
    configuration (``log_config=None``); there is no access log. With ``tls_cert_file`` and
    ``tls_key_file`` it serves HTTPS, loading the pair again when the files change.
    """
    nofile = raise_open_files_limit()
    server_limits = _limits_for(
        max_connections,
        nofile,
        header_timeout_seconds,
        header_timeout_seconds if body_timeout_seconds is None else body_timeout_seconds,
    )
    quiet = _quiet_logger(logging.WARNING)
    idle_connections = IdleConnections()

    class Protocol(GuardedH11Protocol):
        limits = server_limits
        idle = idle_connections
        quiet_logger = quiet

    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=Protocol,
        # limit_concurrency answers 503 once this many connections or requests are open;
        # the connection itself counts, so one more than the connections we keep
        limit_concurrency=server_limits.max_connections + 1,
        backlog=server_limits.backlog,
        timeout_keep_alive=keep_alive_seconds,
        h11_max_incomplete_event_size=max_header_bytes,
        timeout_graceful_shutdown=graceful_shutdown_seconds,
        access_log=False,
        log_config=None,
        log_level=log_level,
        lifespan="auto",
        ssl_certfile=tls_cert_file,
        ssl_keyfile=tls_key_file,
    )
    quiet.setLevel(logging.getLogger("uvicorn.error").getEffectiveLevel())
    return RecorderServer(
        config,
        idle=idle_connections,
        freeze_startup_heap=freeze_startup_heap,
        tls_check_seconds=tls_check_seconds,
    )


def _limits_for(
    max_connections: int, nofile: int, header_timeout_seconds: float, body_timeout_seconds: float
) -> ConnectionLimits:
    """Limits that fit in ``nofile`` descriptors: the reserve, one accept burst (asyncio
    accepts up to ``backlog`` connections before the ones it closes free their descriptors),
    and the connections with their overflow."""
    if max_connections < 1 or header_timeout_seconds <= 0 or body_timeout_seconds <= 0:
        raise ValueError("max_connections and the timeouts must be positive")
    usable = max(nofile - FD_RESERVE, 64)
    backlog = min(DEFAULT_BACKLOG, max(16, usable // 8))
    overflow = max(8, max_connections // 16)
    budget = usable - backlog
    if max_connections + overflow > budget:
        overflow = max(1, budget // 17)
        lowered = max(1, budget - overflow)
        log.warning(
            "max_connections lowered from %d to %d: this process may open only %d files "
            "(raise the hard limit: ulimit -n, or the container runtime's nofile limit)",
            max_connections,
            lowered,
            nofile,
        )
        max_connections = lowered
    return ConnectionLimits(
        max_connections, overflow, backlog, header_timeout_seconds, body_timeout_seconds
    )
