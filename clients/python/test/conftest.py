"""Test support: a real ``wsgate serve`` per session (and per test where a
test needs its own flags), real WebSocket clients (``websockets``).

The binary is ``$WSGATE_BIN`` or ``target/debug/wsgate`` of this checkout;
a missing binary is an error, never a skip.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import secrets
import subprocess
import tempfile
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection

import wsgate

REPO = Path(__file__).resolve().parents[3]
BIN = Path(os.environ.get("WSGATE_BIN", REPO / "target" / "debug" / "wsgate"))
LISTENING = "wsgate listening on http://"
START_TIMEOUT = 60.0
#: Generous: the test machine's cores are shared.
RECV_TIMEOUT = 20.0


@dataclass
class Server:
    """One running ``wsgate serve``."""

    process: subprocess.Popen[str]
    url: str
    secret: str
    api_key: str
    stderr_path: str

    @property
    def ws_url(self) -> str:
        return "ws" + self.url[len("http") :]

    def token(self, user: str, **kwargs: Any) -> str:
        return wsgate.mint_token(user, self.secret, **kwargs)

    def client(self, **kwargs: Any) -> wsgate.Client:
        return wsgate.Client(self.url, self.api_key, **kwargs)

    def async_client(self, **kwargs: Any) -> wsgate.AsyncClient:
        return wsgate.AsyncClient(self.url, self.api_key, **kwargs)

    def stderr(self) -> str:
        return Path(self.stderr_path).read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout:
            self.process.stdout.close()
        Path(self.stderr_path).unlink(missing_ok=True)


def start_server(*args: str, api_key: str | None = None) -> Server:
    if not os.access(BIN, os.X_OK):
        raise RuntimeError(f"no wsgate binary at {BIN}: build it (cargo build) or set WSGATE_BIN")
    secret = secrets.token_hex(16)
    key = api_key if api_key is not None else secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WSGATE_") and k != "RUST_LOG"}
    err = tempfile.NamedTemporaryFile("w", prefix="wsgate-stderr-", delete=False)
    command = [str(BIN), "serve", "--listen", "127.0.0.1:0", "--jwt-secret", secret]
    if key:
        command += ["--api-key", key]
    process = subprocess.Popen([*command, *args], stdout=subprocess.PIPE, stderr=err, env=env, text=True)
    err.close()
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    try:
        line = lines.get(timeout=START_TIMEOUT)
    except queue.Empty:
        line = None
    if not line or not line.startswith(LISTENING):
        process.kill()
        process.wait()
        raise RuntimeError(
            f"wsgate did not start (first stdout line {line!r}); stderr:\n"
            + Path(err.name).read_text(errors="replace")
        )
    url = "http://" + line.strip()[len(LISTENING) :]
    return Server(process, url, secret, key, err.name)


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    """The shared server with default flags; tests use their own user ids."""
    s = start_server("--max-connections-per-user", "10")
    yield s
    s.stop()


@pytest.fixture
def server_factory() -> Iterator[Any]:
    """Starts servers with extra flags; stops them after the test."""
    started: list[Server] = []

    def make(*args: str, **kwargs: Any) -> Server:
        s = start_server(*args, **kwargs)
        started.append(s)
        return s

    yield make
    for s in started:
        s.stop()


ENVELOPE = {"type", "data", "timestamp", "id"}


def assert_envelope_fields(message: dict[str, Any]) -> None:
    """v1's four envelope fields, plus the `stream` position v2 adds to a
    recorded event (SPEC-v2 §2.1: name, 8-character epoch, offset from 1)."""
    assert set(message) - {"stream"} == ENVELOPE, message
    if "stream" in message:
        stream = message["stream"]
        assert set(stream) == {"name", "epoch", "offset"}, stream
        assert isinstance(stream["name"], str) and stream["name"], stream
        assert len(stream["epoch"]) == 8 and stream["epoch"].isalnum(), stream
        assert isinstance(stream["offset"], int) and stream["offset"] >= 1, stream


def new_user() -> str:
    return "u-" + uuid.uuid4().hex[:12]


class Ws:
    """A real WebSocket client of the gateway."""

    def __init__(self, ws: ClientConnection, established: dict[str, Any]) -> None:
        self.ws = ws
        self.established = established
        self.connection_id: str = established["data"]["connection_id"]
        self.user_id: str = established["data"]["user_id"]
        self._ids = 0

    async def recv(self, timeout: float = RECV_TIMEOUT) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        message = json.loads(raw)
        assert isinstance(message, dict)
        return message

    async def request(self, type: str, data: dict[str, Any]) -> dict[str, Any]:
        """Sends a client message and returns the server's reply to it."""
        self._ids += 1
        message_id = f"req-{self._ids}"
        await self.ws.send(json.dumps({"type": type, "data": data, "id": message_id}))
        reply = await self.recv()
        assert reply.get("reply_to") == message_id, f"expected the reply to {type}, got {reply}"
        return reply

    async def subscribe(self, *events: str) -> None:
        reply = await self.request("subscribe", {"events": list(events)})
        assert reply["type"] == "subscription.confirmed", reply

    async def assert_nothing_pending(self) -> None:
        """Proves nothing was queued for us: the next frame is our pong."""
        reply = await self.request("ping", {"pingId": "barrier"})
        assert reply["type"] == "pong", reply

    async def closed_with(self) -> int | None:
        """Waits for the server's close; its code."""
        try:
            while True:
                await self.recv()
        except websockets.ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None

    async def close(self) -> None:
        await self.ws.close()


class Api:
    """Either client behind one awaitable face, so each test runs through both."""

    def __init__(self, impl: wsgate.Client | wsgate.AsyncClient) -> None:
        self.impl = impl

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.impl, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            if isinstance(self.impl, wsgate.Client):
                return await asyncio.to_thread(method, *args, **kwargs)
            return await method(*args, **kwargs)

        return call


@pytest.fixture(params=["Client", "AsyncClient"])
async def make_api(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """``make_api(server)``: an :class:`Api` over the parametrized client class."""
    made: list[wsgate.Client | wsgate.AsyncClient] = []

    def make(server: Server, **kwargs: Any) -> Api:
        impl = server.client(**kwargs) if request.param == "Client" else server.async_client(**kwargs)
        made.append(impl)
        return Api(impl)

    yield make
    for impl in made:
        if isinstance(impl, wsgate.Client):
            impl.close()
        else:
            await impl.aclose()


async def connect(server: Server, user: str, **token_kwargs: Any) -> Ws:
    ws = await websockets.connect(
        f"{server.ws_url}/api/v1/ws/{server.token(user, **token_kwargs)}",
        open_timeout=RECV_TIMEOUT,
    )
    established = json.loads(await asyncio.wait_for(ws.recv(), RECV_TIMEOUT))
    assert established["type"] == "connection.established", established
    return Ws(ws, established)


@pytest.fixture
async def clients() -> AsyncIterator[Any]:
    """``await clients(server, user)`` opens a Ws; all are closed after the test."""
    opened: list[Ws] = []

    async def make(server: Server, user: str, **kwargs: Any) -> Ws:
        ws = await connect(server, user, **kwargs)
        opened.append(ws)
        return ws

    yield make
    for ws in opened:
        await ws.close()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A skipped test is a test that did not run: fail the run."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and reporter.stats.get("skipped") and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
