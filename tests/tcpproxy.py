"""A TCP proxy on loopback that can be frozen: while frozen it accepts and keeps every
connection open but forwards nothing, as a network partition looks to both ends (their
kernels still see an open connection; nothing arrives)."""

from __future__ import annotations

import selectors
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class FreezableProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._flowing = threading.Event()
        self._flowing.set()
        self._stop = threading.Event()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._accept, daemon=True),
            threading.Thread(target=self._pump, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def freeze(self) -> None:
        self._flowing.clear()

    def thaw(self) -> None:
        self._flowing.set()

    def close(self) -> None:
        self._stop.set()
        self._flowing.set()
        self._listener.close()
        for thread in self._threads:
            thread.join(5)
        with self._lock:
            for a, b in self._pairs:
                a.close()
                b.close()

    def _accept(self) -> None:
        self._listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                continue
            try:
                upstream = socket.create_connection(self._target, timeout=5)
            except OSError:
                client.close()
                continue
            for sock in (client, upstream):
                sock.setblocking(False)
            with self._lock:
                self._pairs.append((client, upstream))

    def _pump(self) -> None:
        while not self._stop.is_set():
            if not self._flowing.wait(0.1):
                continue
            with self._lock:
                pairs = list(self._pairs)
            if not pairs:
                self._stop.wait(0.02)
                continue
            chooser = selectors.DefaultSelector()
            for a, b in pairs:
                chooser.register(a, selectors.EVENT_READ, (a, b))
                chooser.register(b, selectors.EVENT_READ, (b, a))
            for key, _ in chooser.select(0.05):
                if not self._flowing.is_set():
                    break
                source, sink = key.data
                try:
                    data = source.recv(65536)
                    if data:
                        sink.setblocking(True)
                        sink.sendall(data)
                        sink.setblocking(False)
                        continue
                except OSError:
                    pass
                self._close_pair(source, sink)
            chooser.close()

    def _close_pair(self, a: socket.socket, b: socket.socket) -> None:
        with self._lock:
            self._pairs = [p for p in self._pairs if a not in p]
        a.close()
        b.close()


@contextmanager
def freezable_proxy(host: str, port: int) -> Iterator[FreezableProxy]:
    proxy = FreezableProxy(host, port)
    try:
        yield proxy
    finally:
        proxy.close()
