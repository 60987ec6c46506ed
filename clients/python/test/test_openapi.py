"""docs/openapi.yaml against the real server.

1. Every route the router serves is documented, and every documented path
   is served (the route table is parsed from the source: see routes.py).
2. Every documented answer of every operation is produced by the real
   binary and validated with openapi-core (status, headers, body schema),
   requests too where they are meant to be valid. The few answers no test
   can provoke on demand are listed in UNPROVOKED, with the reason.
3. The ``upload.cancel`` webhook the server POSTs matches ``webhooks``.
"""

from __future__ import annotations

import http.server
import json
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
import websockets.sync.client
import yaml
from conftest import RECV_TIMEOUT, REPO, Server, new_user
from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters
from openapi_spec_validator import validate as validate_spec
from routes import console_assets, served_routes
from werkzeug.datastructures import Headers, ImmutableMultiDict

SPEC_PATH = REPO / "docs" / "openapi.yaml"
METHODS = {"get", "post", "put", "patch", "delete", "head", "options"}
UPGRADE = {
    "connection": "Upgrade",
    "upgrade": "websocket",
    "sec-websocket-version": "13",
    "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
}

#: (method, path, status) documented but not provoked, and why.
UNPROVOKED = {
    (m, p, "503"): "UNAVAILABLE is answered only while the server shuts down its shards"
    for m, p in [
        ("post", "/api/v1/events"),
        ("post", "/api/v1/notifications"),
        ("post", "/api/v1/reviews/{review_id}/updated"),
        ("post", "/api/v1/files/{file_id}/status"),
        ("get", "/api/v1/connections"),
        ("delete", "/api/v1/connections/{connection_id}"),
        ("post", "/api/v1/users/{user_id}/deactivate"),
    ]
}


@dataclass
class OARequest:
    host_url: str
    path: str
    method: str
    body: bytes | None
    content_type: str
    parameters: RequestParameters


@dataclass
class OAWebhookRequest:
    name: str
    method: str
    body: bytes | None
    content_type: str
    parameters: RequestParameters


@dataclass
class OAResponse:
    data: bytes
    status_code: int
    content_type: str
    headers: Headers


def _parameters(url: str, headers: Any) -> RequestParameters:
    return RequestParameters(
        query=ImmutableMultiDict(parse_qsl(urlsplit(url).query, keep_blank_values=True)),
        header=Headers(list(headers.items())),
        cookie=ImmutableMultiDict(),
    )


def from_httpx(request: httpx.Request) -> OARequest:
    url = str(request.url)
    parts = urlsplit(url)
    return OARequest(
        host_url=f"{parts.scheme}://{parts.netloc}",
        path=parts.path,
        method=request.method.lower(),
        body=request.content or None,
        content_type=request.headers.get("content-type", ""),
        parameters=_parameters(url, request.headers),
    )


def spec_dict() -> dict[str, Any]:
    return yaml.safe_load(SPEC_PATH.read_text())


@pytest.fixture(scope="module")
def openapi() -> OpenAPI:
    return OpenAPI.from_file_path(str(SPEC_PATH))


def documented_answers() -> set[tuple[str, str, str]]:
    answers = set()
    for path, item in spec_dict()["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                answers |= {(method, path, status) for status in operation["responses"]}
    return answers


@dataclass
class Checker:
    openapi: OpenAPI
    produced: set[tuple[str, str, str]] = field(default_factory=set)
    failures: list[str] = field(default_factory=list)

    def http(
        self,
        server: Server,
        method: str,
        template: str,
        path: str | None = None,
        *,
        expect: int,
        key: str | None = "",
        valid_request: bool = True,
        **kwargs: Any,
    ) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        api_key = server.api_key if key == "" else key
        if api_key:
            headers["authorization"] = f"Bearer {api_key}"
        with httpx.Client(timeout=RECV_TIMEOUT) as http:
            response = http.request(method, server.url + (path or template), headers=headers, **kwargs)
        self.check(template, response.request, response, expect, valid_request)
        return response

    def check(
        self,
        template: str,
        request: httpx.Request,
        response: httpx.Response,
        expect: int,
        valid_request: bool,
    ) -> None:
        label = f"{request.method} {request.url.raw_path.decode()} -> {response.status_code}"
        if response.status_code != expect:
            self.failures.append(f"{label}: expected {expect}; body {response.text[:200]!r}")
            return
        oa_request = from_httpx(request)
        oa_response = OAResponse(
            response.content,
            response.status_code,
            response.headers.get("content-type", ""),
            Headers(list(response.headers.items())),
        )
        self.validate(label, oa_request, oa_response, valid_request)
        self.produced.add((request.method.lower(), template, str(expect)))

    def upgrade(self, server: Server, template: str, path: str, **kwargs: Any) -> None:
        """A real WebSocket handshake; validates the 101."""
        with websockets.sync.client.connect(server.ws_url + path, open_timeout=RECV_TIMEOUT, **kwargs) as ws:
            ws.recv(timeout=RECV_TIMEOUT)
            request, response = ws.request, ws.response
        assert request is not None and response is not None
        url = server.url + request.path
        oa_request = OARequest(
            host_url=server.url,
            path=urlsplit(url).path,
            method="get",
            body=None,
            content_type="",
            parameters=_parameters(url, request.headers),
        )
        oa_response = OAResponse(
            bytes(response.body),
            response.status_code,
            response.headers.get("content-type", ""),
            Headers(list(response.headers.raw_items())),
        )
        self.validate(f"GET {request.path} -> 101", oa_request, oa_response, True)
        self.produced.add(("get", template, str(response.status_code)))

    def validate(self, label: str, request: Any, response: OAResponse, valid_request: bool) -> None:
        if valid_request:
            errors = list(self.openapi.iter_request_errors(request))
            if errors:
                self.failures.append(f"{label}: request does not match the document: {_short(errors)}")
        errors = list(self.openapi.iter_response_errors(request, response))
        if errors:
            self.failures.append(f"{label}: answer does not match the document: {_short(errors)}")


def _short(errors: list[Exception]) -> str:
    return "; ".join(repr(getattr(e, "__cause__", None) or e)[:400] for e in errors)


def test_the_document_is_valid_openapi_3_1():
    spec = spec_dict()
    assert spec["openapi"].startswith("3.1")
    validate_spec(spec)


def test_every_served_route_is_documented_and_every_documented_path_served():
    served = served_routes(REPO)
    assert len(served) >= 20, f"the route parser found too few routes: {sorted(served)}"
    documented = {
        (method.upper(), _normalize(path))
        for path, item in spec_dict()["paths"].items()
        for method in item
        if method in METHODS
    }
    undocumented = {(m, p) for m, p in served if not any(_covers(m, p, d) for d in documented)}
    assert not undocumented, f"served but not in docs/openapi.yaml: {sorted(undocumented)}"
    unserved = {d for d in documented if not any(_covers(m, p, d) for m, p in served)}
    assert not unserved, f"documented but not served: {sorted(unserved)}"


def _normalize(path: str) -> str:
    import re

    return re.sub(r"\{[^}]+\}", "{}", path)


def _covers(method: str, path: str, documented: tuple[str, str]) -> bool:
    return path == documented[1] and method in ("*", documented[0])


def test_parsed_routes_exist_on_the_real_server(server: Server, server_factory):
    """Guards the parser: each route it found is answered by a handler,
    not by the "no such endpoint" fallback."""
    echo = server_factory("--conformance-echo")
    with httpx.Client(timeout=RECV_TIMEOUT) as http:
        for method, path in sorted(served_routes(REPO)):
            target = echo if path.startswith("/conformance") else server
            response = http.request(
                "GET" if method == "*" else method,
                target.url + path.replace("{}", "x"),
                headers={"authorization": f"Bearer {target.api_key}"},
                json={} if method == "POST" else None,
            )
            assert response.status_code != 405, (method, path)
            if response.status_code == 404:
                assert "no such" not in response.json()["detail"], (method, path, response.text)


def test_every_documented_answer_is_what_the_server_answers(openapi, server, server_factory, tmp_path):
    c = Checker(openapi)
    user = new_user()
    big = "x" * 70_000  # over the default --max-message-size, under its body slack
    with websockets.sync.client.connect(
        f"{server.ws_url}/api/v1/ws/{server.token(user)}", open_timeout=RECV_TIMEOUT
    ) as ws_conn:
        connection_id = json.loads(ws_conn.recv(timeout=RECV_TIMEOUT))["data"]["connection_id"]
        ws_conn.send(json.dumps({"type": "subscribe", "data": {"events": ["file.ready"]}}))
        ws_conn.recv(timeout=RECV_TIMEOUT)

        events = "/api/v1/events"
        c.http(
            server,
            "POST",
            events,
            json={"type": "upload.progress", "data": {"p": 1}, "users": [user]},
            expect=200,
        )
        c.http(server, "POST", events, json={"type": "review.created", "all": True}, expect=200)
        c.http(server, "POST", events, json={"type": "nope"}, expect=400, valid_request=False)
        c.http(
            server,
            "POST",
            events,
            json={"type": "upload.progress"},
            expect=401,
            key=None,
            valid_request=False,
        )
        c.http(
            server, "POST", events, json={"type": "upload.progress", "data": big, "users": [user]}, expect=413
        )

        notes = "/api/v1/notifications"
        c.http(
            server,
            "POST",
            notes,
            json={"message": "hi", "level": "warning", "users": [user], "x": 1},
            expect=200,
        )
        c.http(server, "POST", notes, json={"message": 5}, expect=400, valid_request=False)
        c.http(server, "POST", notes, json={"message": "hi"}, expect=401, key="wrong", valid_request=False)
        c.http(server, "POST", notes, json={"message": big, "users": [user]}, expect=413)

        review = "/api/v1/reviews/{review_id}/updated"
        c.http(server, "POST", review, "/api/v1/reviews/r1/updated", json={"changes": {"a": 1}}, expect=200)
        c.http(
            server,
            "POST",
            review,
            "/api/v1/reviews/r1/updated",
            json={"changes": []},
            expect=400,
            valid_request=False,
        )
        c.http(
            server,
            "POST",
            review,
            "/api/v1/reviews/r1/updated",
            json={},
            expect=401,
            key=None,
            valid_request=False,
        )
        c.http(
            server,
            "POST",
            review,
            "/api/v1/reviews/r1/updated",
            json={"changes": {"a": big}, "users": [user]},
            expect=413,
        )

        files = "/api/v1/files/{file_id}/status"
        c.http(
            server,
            "POST",
            files,
            "/api/v1/files/f1/status",
            json={"user_id": user, "status": "processing", "progress": 5},
            expect=200,
        )
        c.http(
            server,
            "POST",
            files,
            "/api/v1/files/f1/status",
            content=b"not json",
            expect=400,
            valid_request=False,
        )
        c.http(
            server,
            "POST",
            files,
            "/api/v1/files/f1/status",
            json={},
            expect=401,
            key=None,
            valid_request=False,
        )
        c.http(
            server,
            "POST",
            files,
            "/api/v1/files/f1/status",
            json={"user_id": user, "status": big},
            expect=413,
        )

        c.http(server, "GET", "/api/v1/stats", expect=200)
        c.http(server, "GET", "/api/v1/stats", expect=401, key=None, valid_request=False)

        conns = "/api/v1/connections"
        listed = c.http(server, "GET", conns, params={"user_id": user}, expect=200).json()
        assert [x["connection_id"] for x in listed] == [connection_id]
        c.http(server, "GET", conns, expect=200)
        c.http(server, "GET", conns, conns + "?user_id=%zz", expect=400)
        c.http(server, "GET", conns, expect=401, key=None, valid_request=False)

        one = "/api/v1/connections/{connection_id}"
        c.http(server, "DELETE", one, f"/api/v1/connections/{connection_id}", expect=204)
        c.http(server, "DELETE", one, f"/api/v1/connections/{connection_id}", expect=404)
        c.http(server, "DELETE", one, "/api/v1/connections/c", expect=401, key=None, valid_request=False)

    for action in ("deactivate", "activate"):
        template = f"/api/v1/users/{{user_id}}/{action}"
        c.http(server, "POST", template, f"/api/v1/users/{user}/{action}", expect=204)
        c.http(
            server,
            "POST",
            template,
            f"/api/v1/users/{user}/{action}",
            expect=401,
            key=None,
            valid_request=False,
        )

    # History (SPEC-v2 §8): the user's stream got the publishes above.
    stream = "/api/v1/streams/{name}"
    mine = f"/api/v1/streams/user%3A{user}"
    read = c.http(server, "GET", stream, mine, expect=200).json()
    assert read["name"] == f"user:{user}" and read["events"], read
    c.http(server, "GET", stream, mine, params={"since": f"{read['epoch']}:0", "limit": 2}, expect=200)
    c.http(server, "GET", stream, mine + "?since=nonsense", expect=400, valid_request=False)
    c.http(server, "GET", stream, mine, expect=401, key=None, valid_request=False)
    c.http(server, "DELETE", stream, mine, expect=204)
    c.http(server, "GET", stream, mine, expect=404)
    c.http(server, "DELETE", stream, mine, expect=401, key=None, valid_request=False)
    history_off = server_factory("--history-size", "0")
    c.http(history_off, "DELETE", stream, mine, expect=404)

    # The WebSocket endpoints: each token form, then each refusal.
    c.upgrade(server, "/api/v1/ws/{token}", f"/api/v1/ws/{server.token(new_user())}")
    c.upgrade(server, "/api/v1/ws", f"/api/v1/ws?token={server.token(new_user())}")
    c.upgrade(
        server, "/api/v1/ws", "/api/v1/ws", subprotocols=["wsgate.v1", f"bearer.{server.token(new_user())}"]
    )
    c.upgrade(
        server,
        "/api/v1/ws",
        "/api/v1/ws",
        additional_headers={"authorization": f"Bearer {server.token(new_user())}"},
    )
    for template, path in (
        ("/api/v1/ws", f"/api/v1/ws?token={server.token(new_user())}"),
        ("/api/v1/ws/{token}", f"/api/v1/ws/{server.token(new_user())}"),
    ):
        c.http(server, "GET", template, path, expect=400, key=None)
        c.http(server, "GET", template, path.replace(".", "x", 1), expect=401, key=None, headers=UPGRADE)

    limited = server_factory("--max-connections-per-user", "1", "--max-connections", "2")
    holder = new_user()
    with websockets.sync.client.connect(f"{limited.ws_url}/api/v1/ws/{limited.token(holder)}") as first:
        first.recv(timeout=RECV_TIMEOUT)
        c.http(
            limited,
            "GET",
            "/api/v1/ws",
            f"/api/v1/ws?token={limited.token(holder)}",
            expect=429,
            key=None,
            headers=UPGRADE,
        )
        c.http(
            limited,
            "GET",
            "/api/v1/ws/{token}",
            f"/api/v1/ws/{limited.token(holder)}",
            expect=429,
            key=None,
            headers=UPGRADE,
        )
        with websockets.sync.client.connect(
            f"{limited.ws_url}/api/v1/ws/{limited.token(new_user())}"
        ) as second:
            second.recv(timeout=RECV_TIMEOUT)
            c.http(
                limited,
                "GET",
                "/api/v1/ws",
                f"/api/v1/ws?token={limited.token(new_user())}",
                expect=503,
                key=None,
                headers=UPGRADE,
            )
            c.http(
                limited,
                "GET",
                "/api/v1/ws/{token}",
                f"/api/v1/ws/{limited.token(new_user())}",
                expect=503,
                key=None,
                headers=UPGRADE,
            )

    echo = server_factory("--conformance-echo", "--max-connections", "1")
    c.http(server, "GET", "/conformance/echo", expect=404, key=None, headers=UPGRADE)
    c.http(echo, "GET", "/conformance/echo", expect=400, key=None)
    with websockets.sync.client.connect(f"{echo.ws_url}/conformance/echo") as held:
        held.send("hello")
        assert held.recv(timeout=RECV_TIMEOUT) == "hello"
        c.produced.add(("get", "/conformance/echo", "101"))
        c.http(echo, "GET", "/conformance/echo", expect=503, key=None, headers=UPGRADE)

    assert c.http(server, "GET", "/health", expect=200, key=None).json() == {"status": "ok"}
    # Cluster mode with its Redis unreachable (nothing listens on port 1).
    cluster = server_factory("--redis-url", "redis://127.0.0.1:1")
    degraded = c.http(cluster, "GET", "/health", expect=200, key=None).json()
    assert degraded == {"status": "degraded", "backplane": "disconnected"}
    # Cluster-wide history is not built yet: the streams calls say so.
    c.http(cluster, "GET", stream, mine, expect=503)
    c.http(cluster, "DELETE", stream, mine, expect=503)
    c.http(server, "GET", "/metrics", expect=200, key=None)
    # Every file the console serves, from its asset table.
    for page in console_assets(REPO):
        c.http(server, "GET", page, expect=200, key=None)

    assert not c.failures, "\n".join(c.failures)
    missing = documented_answers() - c.produced - set(UNPROVOKED)
    assert not missing, f"documented answers no test produced: {sorted(missing)}"
    assert not (set(UNPROVOKED) - documented_answers()), "UNPROVOKED lists an answer the document lacks"


class _Receiver(http.server.BaseHTTPRequestHandler):
    received: queue.Queue[tuple[str, dict[str, str], bytes]]

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        self.received.put((self.path, dict(self.headers.items()), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, queue.Queue[tuple[str, dict[str, str], bytes]]]]:
    received: queue.Queue[tuple[str, dict[str, str], bytes]] = queue.Queue()
    handler = type("Handler", (_Receiver,), {"received": received})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/hooks", received
    httpd.shutdown()
    httpd.server_close()


def test_the_upload_cancel_webhook_matches_the_document(openapi, server_factory, receiver):
    url, received = receiver
    server = server_factory("--webhook-url", url)
    user = new_user()
    with websockets.sync.client.connect(f"{server.ws_url}/api/v1/ws/{server.token(user)}") as ws:
        ws.recv(timeout=RECV_TIMEOUT)
        ws.send(json.dumps({"type": "upload.cancel", "data": {"upload_id": "up-1", "reason": "user"}}))
        assert json.loads(ws.recv(timeout=RECV_TIMEOUT))["type"] == "upload.cancel.acknowledged"
        path, headers, body = received.get(timeout=RECV_TIMEOUT)
    assert path == "/hooks"
    request = OAWebhookRequest(
        name="upload.cancel",
        method="post",
        body=body,
        content_type=headers.get("content-type", headers.get("Content-Type", "")),
        parameters=RequestParameters(header=Headers(list(headers.items()))),
    )
    errors = list(openapi.iter_request_errors(request))
    assert not errors, _short(errors)
    message = json.loads(body)
    assert (message["user_id"], message["data"]) == (user, {"upload_id": "up-1", "reason": "user"})
