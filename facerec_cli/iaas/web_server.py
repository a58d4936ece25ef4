"""The web tier's HTTP server: waitress serving a WSGI app in a background thread.

waitress is a production WSGI server: a fixed pool of ``threads`` request threads, each may wait for one
answer, so ``threads`` bounds the requests in flight per web tier. Requests are read by waitress's event
loop, not by those threads; a connection that is idle for ``channel_timeout_s``, or whose request is not
completely received within ``read_timeout_s``, gets a 408 and is closed, so slow clients cannot hold the
connections for long.
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from typing import Any


def _timed_channel_class() -> Any:
    """waitress's channel, whose request parser notes when its request's first byte came."""
    from waitress.channel import HTTPChannel
    from waitress.parser import HTTPRequestParser

    class TimedParser(HTTPRequestParser):
        def __init__(self, adj: Any) -> None:
            super().__init__(adj)
            self.facerec_started = time.monotonic()

    class TimedChannel(HTTPChannel):
        parser_class = TimedParser

    return TimedChannel


class WebServer:
    """waitress serving a WSGI app in a background thread (``port=0``: any free port).

    Slow clients: waitress reads requests in its event loop and hands a request to one of ``threads``
    only once it is complete, so a slow client holds a connection, not a thread. To keep them from
    holding all ``connection_limit`` connections: a connection idle for ``channel_timeout_s`` is
    closed (waitress's own ``channel_timeout``), and a request that is not completely received
    ``read_timeout_s`` after its first byte (headers sent one byte at a time, a body that trickles) is
    answered 408 and its connection closed; an idle connection in the middle of a request gets the
    408 too. Checked every second (waitress's ``cleanup_interval``). ``refused`` counts the 408s (and
    so does ``counts[408]``, given the web tier's HTTP status counter)."""

    def __init__(
        self,
        app: Any,
        *,
        host: str = "127.0.0.1",
        port: int = 8000,
        threads: int = 64,
        max_body: int = 11 * 2**20,
        channel_timeout_s: int = 30,
        read_timeout_s: float = 60.0,
        connection_limit: int | None = None,
        counts: collections.Counter[int] | None = None,
    ) -> None:
        from waitress.server import create_server

        self.read_timeout_s = read_timeout_s
        self.refused = 0
        self.counts = counts
        self.server = create_server(
            app,
            host=host,
            port=port,
            threads=threads,
            connection_limit=connection_limit or max(256, threads * 4),
            channel_timeout=max(1, int(channel_timeout_s)),
            cleanup_interval=1,
            max_request_body_size=max_body,
            ident="facerec",
            clear_untrusted_proxy_headers=True,
        )
        self.server.channel_class = _timed_channel_class()
        original = self.server.maintenance

        def maintenance(now: float) -> None:
            self._refuse_slow(now)
            original(now)

        self.server.maintenance = maintenance  # type: ignore[method-assign]
        self._thread: threading.Thread | None = None

    def _refuse_slow(self, now: float) -> None:
        """(In waitress's event-loop thread.) 408 for every partly received request that is too slow."""
        server = self.server
        idle_before = now - server.adj.channel_timeout
        mono = time.monotonic()
        for channel in list(server.active_channels.values()):
            partial = getattr(channel, "request", None)
            if partial is None or channel.requests or channel.will_close or channel.close_when_flushed:
                continue
            started = getattr(partial, "facerec_started", mono)
            if mono - started < self.read_timeout_s and channel.last_activity >= idle_before:
                continue
            body = (
                f"408 Request Timeout: the request was not received within {self.read_timeout_s:g} s "
                f"(or the connection stayed idle for {server.adj.channel_timeout} s); send it again\n"
            ).encode()
            head = (
                "HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain; charset=utf-8\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\nServer: facerec\r\n\r\n"
            ).encode()
            with contextlib.suppress(Exception):
                partial.close()  # its spooled body, if any
            channel.request = None
            with channel.outbuf_lock:
                channel.outbufs[-1].append(head + body)
                channel.current_outbuf_count += len(head) + len(body)
                channel.total_outbufs_len += len(head) + len(body)
            channel.close_when_flushed = True  # the loop flushes the 408, then closes
            channel.last_activity = now  # (not closed unflushed by waitress's own idle check)
            self.refused += 1
            if self.counts is not None:
                self.counts[408] += 1

    @property
    def url(self) -> str:
        host = self.server.effective_host
        return f"http://{host}:{self.server.effective_port}"

    def start(self) -> "WebServer":
        self._thread = threading.Thread(target=self.server.run, name="facerec-waitress", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.server.run()

    def stop(self, timeout: float = 5.0) -> None:
        """Close the listener and every open connection (in the server's own thread, through its
        trigger), then stop the request threads."""
        server = self.server

        def close_all() -> None:
            for obj in list(server._map.values()):
                if obj is not server.trigger:
                    with contextlib.suppress(OSError):
                        obj.close()
            server.trigger.close()  # the map is empty now: the loop ends

        if self._thread is not None and self._thread.is_alive():
            server.trigger.pull_trigger(close_all)
            self._thread.join(timeout)
        else:
            close_all()
        server.task_dispatcher.shutdown(timeout=timeout)
