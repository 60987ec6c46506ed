"""The FastAPI example app: its token endpoint against the real gateway,
its webhook endpoint with signatures computed here, and the whole loop
(browser asks to cancel, gateway calls the app, app notifies the user)
with the app served by uvicorn and called by the real binary."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import queue
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
import websockets
from conftest import BIN, RECV_TIMEOUT, Server, Ws, new_user
from fastapi.testclient import TestClient

from examples.fastapi_app import Settings, create_app

WEBHOOK_SECRET = "whsec-example-0123456789abcdef"


def settings_for(server: Server, webhook_secret: str | None = WEBHOOK_SECRET) -> Settings:
    return Settings(server.url, server.api_key, server.secret, webhook_secret)


def signed(body: bytes, secret: str = WEBHOOK_SECRET, t: int | None = None) -> dict[str, str]:
    t = int(time.time()) if t is None else t
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return {"wsgate-signature": f"t={t},v1={mac}", "content-type": "application/json"}


def cancel_body(user: str, upload_id: str = "up-1") -> bytes:
    return json.dumps(
        {
            "type": "upload.cancel",
            "user_id": user,
            "connection_id": "c-1",
            "data": {"upload_id": upload_id},
            "id": "m-1",
            "timestamp": "2026-12-01T10:00:00.000Z",
        }
    ).encode()


async def open_with_app_token(http: TestClient, user: str) -> Ws:
    answer = http.get("/api/realtime/token", headers={"x-demo-user": user})
    assert answer.status_code == 200, answer.text
    minted = answer.json()
    ws = await websockets.connect(
        minted["url"], subprotocols=["wsgate.v1", f"bearer.{minted['token']}"], open_timeout=RECV_TIMEOUT
    )
    assert ws.subprotocol == "wsgate.v1"
    return Ws(ws, json.loads(await asyncio.wait_for(ws.recv(), RECV_TIMEOUT)))


async def test_token_endpoint_mints_for_the_logged_in_user(server):
    with TestClient(create_app(settings_for(server))) as http:
        assert http.get("/api/realtime/token").status_code == 401
        user = new_user()
        ws = await open_with_app_token(http, user)
    assert ws.user_id == user
    await ws.close()


async def test_signed_upload_cancel_is_taken_and_the_user_notified(server):
    seen: list[dict[str, Any]] = []
    user = new_user()
    with TestClient(create_app(settings_for(server), seen.append)) as http:
        ws = await open_with_app_token(http, user)
        body = cancel_body(user)
        answer = http.post("/webhooks/wsgate", content=body, headers=signed(body))
    assert answer.status_code == 204, answer.text
    assert seen == [json.loads(body)]
    note = await ws.recv()
    assert note["type"] == "system.notification"
    assert note["data"]["upload_id"] == "up-1"
    await ws.close()


@pytest.mark.parametrize(
    "headers",
    [
        lambda body: {"content-type": "application/json"},
        lambda body: signed(body, secret="another-secret-0123456789abcdef"),
        lambda body: signed(body, t=int(time.time()) - 3600),
        lambda body: signed(body + b" "),
    ],
    ids=["unsigned", "wrong-secret", "stale", "body-changed"],
)
def test_unverified_webhooks_are_refused(server, headers):
    seen: list[dict[str, Any]] = []
    with TestClient(create_app(settings_for(server), seen.append)) as http:
        body = cancel_body(new_user())
        answer = http.post("/webhooks/wsgate", content=body, headers=headers(body))
    assert answer.status_code == 401
    assert seen == []


def test_without_a_webhook_secret_the_api_key_is_required(server):
    seen: list[dict[str, Any]] = []
    with TestClient(create_app(settings_for(server, webhook_secret=None), seen.append)) as http:
        body = cancel_body(new_user())
        refused = http.post("/webhooks/wsgate", content=body, headers={"authorization": "Bearer nope"})
        taken = http.post(
            "/webhooks/wsgate", content=body, headers={"authorization": f"Bearer {server.api_key}"}
        )
    assert (refused.status_code, taken.status_code) == (401, 204)
    assert len(seen) == 1


def gateway_signs_webhooks() -> bool:
    """Whether this binary has v2's --webhook-secret (added in parallel)."""
    help_text = subprocess.run([str(BIN), "serve", "--help"], capture_output=True, text=True).stdout
    return "--webhook-secret" in help_text


@pytest.fixture
def served_app() -> Iterator[Any]:
    """Serves the example with uvicorn on a free port; returns (url, start)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    started: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(settings: Settings, on_cancel: Any) -> None:
        config = uvicorn.Config(create_app(settings, on_cancel), log_level="warning", lifespan="on")
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + RECV_TIMEOUT
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
            time.sleep(0.02)
        started.append((server, thread))

    yield f"http://127.0.0.1:{sock.getsockname()[1]}", start
    for server, thread in started:
        server.should_exit = True
        thread.join(timeout=RECV_TIMEOUT)
    sock.close()


async def test_the_gateway_calls_the_example_app(server_factory, served_app):
    app_url, start_app = served_app
    secret = WEBHOOK_SECRET if gateway_signs_webhooks() else None
    flags = ["--webhook-url", f"{app_url}/webhooks/wsgate"]
    if secret:
        flags += ["--webhook-secret", secret]
    gateway = server_factory(*flags)
    cancels: queue.Queue[dict[str, Any]] = queue.Queue()
    start_app(Settings(gateway.url, gateway.api_key, gateway.secret, secret), cancels.put)
    user = new_user()
    with TestClient(create_app(Settings(gateway.url, gateway.api_key, gateway.secret))) as http:
        ws = await open_with_app_token(http, user)

    await ws.ws.send(json.dumps({"type": "upload.cancel", "data": {"upload_id": "up-7"}, "id": "x"}))

    assert (await ws.recv())["type"] == "upload.cancel.acknowledged"
    event = await asyncio.to_thread(cancels.get, timeout=RECV_TIMEOUT)
    assert (event["user_id"], event["connection_id"], event["data"]) == (
        user,
        ws.connection_id,
        {"upload_id": "up-7"},
    )
    note = await ws.recv()
    assert (note["type"], note["data"]["upload_id"]) == ("system.notification", "up-7")
    await ws.close()
