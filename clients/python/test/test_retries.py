"""Retries happen only where repeating a call cannot deliver twice.

The failures are real sockets: a port nobody listens on, a server that
reads the request and hangs up, one that answers 503 with ``Retry-After``
(the states a restarting node or a proxy in front of it shows; the gateway
itself cannot be made to produce them on demand).
"""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

import wsgate

RETRIES = 2
FAST = {"retries": RETRIES, "backoff": 0.01, "max_backoff": 0.05}

NOT_FOUND = (
    b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\n"
    b"connection: close\r\ncontent-length: 42\r\n\r\n"
    b'{"code":"NOT_FOUND","detail":"no such id"}'
)
UNAVAILABLE = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
    b"retry-after: 0\r\nconnection: close\r\ncontent-length: 52\r\n\r\n"
    b'{"code":"UNAVAILABLE","detail":"shutting down ...."}'
)


class Faulty(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, *answers: bytes | None) -> None:
        # One answer per request in turn, the last one repeated; None hangs up.
        self.answers = answers
        self.requests_seen = 0
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), FaultyHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class FaultyHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server: Faulty = self.server  # type: ignore[assignment]
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.request.recv(65536)
            if not chunk:
                return
            data += chunk
        with server.lock:
            answer = server.answers[min(server.requests_seen, len(server.answers) - 1)]
            server.requests_seen += 1
        if answer is not None:
            self.request.sendall(answer)
        # Else hang up without an answer: the request may have been acted on.


@pytest.fixture
def faulty() -> Iterator[Callable[..., Faulty]]:
    servers: list[Faulty] = []

    def make(*answers: bytes | None) -> Faulty:
        s = Faulty(*answers)
        threading.Thread(target=s.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.shutdown()
        s.server_close()


def calls(client: wsgate.Client) -> dict[str, Callable[[], Any]]:
    return {
        "stats": client.stats,
        "connections": client.connections,
        "disconnect": lambda: client.disconnect("c1"),
        "deactivate_user": lambda: client.deactivate_user("u1"),
        "activate_user": lambda: client.activate_user("u1"),
        "publish_to_all": lambda: client.publish_to_all("system.notification", {}),
        "system_notification": lambda: client.system_notification("hi"),
        "file_status": lambda: client.file_status("f", "u", "processing"),
    }


REPEATABLE = {"stats", "connections", "disconnect", "deactivate_user", "activate_user"}


@pytest.mark.parametrize("name", sorted(calls(wsgate.Client("http://x")).keys()))
def test_a_lost_answer_is_retried_only_for_repeatable_calls(faulty, name):
    server = faulty(None)
    with wsgate.Client(server.url, "key", **FAST) as client:
        with pytest.raises(wsgate.TransportError):
            calls(client)[name]()
    assert server.requests_seen == (RETRIES + 1 if name in REPEATABLE else 1)


@pytest.mark.parametrize("name", sorted(calls(wsgate.Client("http://x")).keys()))
def test_503_is_retried_only_for_repeatable_calls(faulty, name):
    server = faulty(UNAVAILABLE)
    with wsgate.Client(server.url, "key", **FAST) as client:
        with pytest.raises(wsgate.Unavailable) as raised:
            calls(client)[name]()
    assert (raised.value.status, raised.value.code, raised.value.retry_after) == (
        503,
        "UNAVAILABLE",
        0,
    )
    assert raised.value.detail == "shutting down ...."
    assert server.requests_seen == (RETRIES + 1 if name in REPEATABLE else 1)


async def test_async_client_retries_the_same_way(faulty):
    server = faulty(None)
    async with wsgate.AsyncClient(server.url, "key", **FAST) as client:
        with pytest.raises(wsgate.TransportError):
            await client.stats()
        assert server.requests_seen == RETRIES + 1
        with pytest.raises(wsgate.TransportError):
            await client.publish_to_all("system.notification", {})
        assert server.requests_seen == RETRIES + 2


def test_a_refused_connection_is_retried_even_for_publishes():
    """Nothing was sent, so a publish is safe to try again."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Closed again: the port now refuses connections.
    attempts = []
    http = httpx.Client(event_hooks={"request": [attempts.append]})
    with wsgate.Client(f"http://127.0.0.1:{port}", "key", http_client=http, **FAST) as client:
        with pytest.raises(wsgate.TransportError):
            client.publish_to_all("system.notification", {})
    assert len(attempts) == RETRIES + 1


def test_a_disconnect_whose_answer_was_lost_is_done_when_the_retry_finds_nothing(faulty):
    """The first attempt may have closed the connection: a 404 on a retry is success."""
    server = faulty(None, NOT_FOUND)
    with wsgate.Client(server.url, "key", **FAST) as client:
        client.disconnect("c1")
    assert server.requests_seen == 2


def test_a_first_404_is_not_found(faulty):
    server = faulty(NOT_FOUND)
    with wsgate.Client(server.url, "key", **FAST) as client, pytest.raises(wsgate.NotFound):
        client.disconnect("c1")
    assert server.requests_seen == 1
