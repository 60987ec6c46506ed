"""Every method of Client and AsyncClient against the real binary (each
test runs once per class), and every error code of the server API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx
import pytest
import websockets
from conftest import RECV_TIMEOUT, Server, assert_envelope_fields, connect, new_user

import wsgate


def assert_envelope(message: dict[str, Any], type: str, published: wsgate.Published) -> None:
    assert_envelope_fields(message)
    assert message["type"] == type
    assert message["id"] == published.id
    assert message["timestamp"].endswith("Z")
    datetime.fromisoformat(message["timestamp"].replace("Z", "+00:00"))


async def test_publish_to_users_reaches_every_connection_of_those_users(server, clients, make_api):
    api = make_api(server)
    alice, bob = new_user(), new_user()
    a1, a2, b = await clients(server, alice), await clients(server, alice), await clients(server, bob)
    data = {"upload_id": "up-1", "progress": 45}

    published = await api.publish_to_users("upload.progress", data, [alice])

    assert published.delivered == 2
    for ws in (a1, a2):
        message = await ws.recv()
        assert_envelope(message, "upload.progress", published)
        assert message["data"] == data
    await b.assert_nothing_pending()


async def test_publish_to_connections_reaches_only_those(server, clients, make_api):
    api = make_api(server)
    user = new_user()
    first, second = await clients(server, user), await clients(server, user)

    published = await api.publish_to_connections(
        "upload.completed", {"upload_id": "x"}, [first.connection_id, "no-such-connection"]
    )

    assert published.delivered == 1
    assert (await first.recv())["data"] == {"upload_id": "x"}
    await second.assert_nothing_pending()


async def test_publish_with_users_and_connections_together(server, clients, make_api):
    api = make_api(server)
    alice, bob, carol = new_user(), new_user(), new_user()
    a, b, c = await clients(server, alice), await clients(server, bob), await clients(server, carol)

    published = await api.publish(
        "review.created", {"review_id": "r"}, users=[alice], connections=[b.connection_id]
    )

    assert published.delivered == 2
    assert (await a.recv())["type"] == "review.created"
    assert (await b.recv())["type"] == "review.created"
    await c.assert_nothing_pending()


async def test_publish_to_subscribers_reaches_only_subscribers(server_factory, clients, make_api):
    server = server_factory()
    api = make_api(server)
    subscribed, other = await clients(server, new_user()), await clients(server, new_user())
    await subscribed.subscribe("system.maintenance")

    published = await api.publish_to_subscribers("system.maintenance", {"at": "tonight"})

    assert published.delivered == 1
    message = await subscribed.recv()
    assert_envelope(message, "system.maintenance", published)
    assert message["data"] == {"at": "tonight"}
    await other.assert_nothing_pending()


async def test_publish_to_all_reaches_every_connection(server_factory, clients, make_api):
    server = server_factory()
    api = make_api(server)
    everyone = [await clients(server, new_user()) for _ in range(3)]

    published = await api.publish_to_all("user.status_changed", None)

    assert published.delivered == 3
    for ws in everyone:
        message = await ws.recv()
        assert message["type"] == "user.status_changed"
        assert message["data"] == {}


async def test_system_notification_to_users_with_extra_fields(server, clients, make_api):
    api = make_api(server)
    target, other = await clients(server, new_user()), await clients(server, new_user())

    published = await api.system_notification(
        "disk almost full", "warning", [target.user_id], action_url="/settings"
    )

    assert published.delivered == 1
    message = await target.recv()
    assert_envelope(message, "system.notification", published)
    data = message["data"]
    assert set(data) == {"message", "level", "timestamp", "action_url"}
    assert (data["message"], data["level"], data["action_url"]) == (
        "disk almost full",
        "warning",
        "/settings",
    )
    await other.assert_nothing_pending()


async def test_review_updated_to_users(server, clients, make_api):
    api = make_api(server)
    ws = await clients(server, new_user())

    published = await api.review_updated("rev-9", {"status": "approved"}, [ws.user_id])

    assert published.delivered == 1
    data = (await ws.recv())["data"]
    assert set(data) == {"review_id", "changes", "timestamp"}
    assert (data["review_id"], data["changes"]) == ("rev-9", {"status": "approved"})


async def test_file_status_processing_and_ready(server, clients, make_api):
    api = make_api(server)
    ws = await clients(server, new_user())

    processing = await api.file_status("file-1", ws.user_id, "processing", 75)
    ready = await api.file_status("file-1", ws.user_id, "done")

    assert processing.delivered == ready.delivered == 1
    first, second = await ws.recv(), await ws.recv()
    assert first["type"] == "file.processing"
    assert {k: first["data"][k] for k in ("file_id", "status", "progress")} == {
        "file_id": "file-1",
        "status": "processing",
        "progress": 75,
    }
    assert second["type"] == "file.ready"
    assert "progress" not in second["data"]


async def test_stats_counts_this_nodes_connections(server_factory, clients, make_api):
    server = server_factory("--shards", "2")
    api = make_api(server)
    user = new_user()
    ws = await clients(server, user)
    await clients(server, user)
    await ws.request("ping", {})

    stats = await api.stats()

    assert isinstance(stats, wsgate.Stats)
    assert (stats.connections, stats.users, len(stats.shards)) == (2, 1, 2)
    assert sum(s.connections for s in stats.shards) == 2
    assert stats.messages_in >= 1 and stats.messages_out >= 3
    assert stats.node_id and stats.uptime_s >= 0 and stats.rate_limited == 0


async def test_connections_lists_a_user_and_everyone(server, clients, make_api):
    api = make_api(server)
    user = new_user() + " with:odd/chars"
    ws = await clients(server, user)
    await ws.subscribe("upload.progress", "file.ready")

    mine = await api.connections(user)
    everyone = await api.connections()

    assert [c.connection_id for c in mine] == [ws.connection_id]
    info = mine[0]
    assert info.user_id == user
    assert info.subscriptions == ("file.ready", "upload.progress")
    assert info.messages_in == 1 and info.messages_out == 2
    assert info.connected_at.endswith("Z") and info.last_activity.endswith("Z")
    assert ws.connection_id in {c.connection_id for c in everyone}
    assert await api.connections(new_user()) == []


async def test_disconnect_closes_with_4003_then_not_found(server, clients, make_api):
    api = make_api(server)
    ws = await clients(server, new_user())

    await api.disconnect(ws.connection_id)

    assert await ws.closed_with() == 4003
    with pytest.raises(wsgate.NotFound) as raised:
        await api.disconnect(ws.connection_id)
    assert (raised.value.status, raised.value.code) == (404, "NOT_FOUND")


async def test_deactivate_closes_and_refuses_until_activate(server, clients, make_api):
    api = make_api(server)
    user = new_user()
    ws = await clients(server, user)

    await api.deactivate_user(user)

    assert await ws.closed_with() == 4003
    with pytest.raises(websockets.InvalidStatus) as refused:
        await connect(server, user)
    assert refused.value.response.status_code == 401
    await api.deactivate_user(user)  # idempotent

    await api.activate_user(user)

    again = await clients(server, user)
    assert again.user_id == user


async def test_health_and_metrics(server, make_api):
    api = make_api(server)
    assert await api.health() == {"status": "ok"}
    text = await api.metrics()
    assert "wsgate_connections" in text and "wsgate_fanout_seconds" in text


# --- error codes ------------------------------------------------------------


async def test_wrong_api_key_is_unauthorized(server, make_api):
    api = make_api(Server(server.process, server.url, server.secret, "wrong", ""))
    for call in (api.stats(), api.publish_to_all("system.notification", {})):
        with pytest.raises(wsgate.Unauthorized) as raised:
            await call
        assert (raised.value.status, raised.value.code) == (401, "UNAUTHORIZED")
        assert raised.value.retry_after is None


async def test_server_without_api_key_is_unauthorized(server_factory, make_api):
    server = server_factory(api_key="")
    with pytest.raises(wsgate.Unauthorized) as raised:
        await make_api(server).stats()
    assert "api-key" in raised.value.detail


@pytest.mark.parametrize(
    "call",
    [
        lambda api: api.publish_to_all("not.an.event", {}),
        lambda api: api.system_notification("hi", "loud"),
        lambda api: api.file_status("f", "", "processing"),
        lambda api: api.review_updated("r", None, [{"not": "an id"}]),
    ],
    ids=["unknown-event", "bad-level", "empty-user", "bad-users"],
)
async def test_bad_requests(server, make_api, call):
    with pytest.raises(wsgate.BadRequest) as raised:
        await call(make_api(server))
    assert (raised.value.status, raised.value.code) == (400, "BAD_REQUEST")
    assert raised.value.detail


async def test_message_over_the_limit_is_payload_too_large(server_factory, clients, make_api):
    server = server_factory("--max-message-size", "1024")
    api = make_api(server)
    ws = await clients(server, new_user())

    with pytest.raises(wsgate.PayloadTooLarge) as raised:
        await api.publish_to_users("upload.progress", {"blob": "x" * 2000}, [ws.user_id])

    assert (raised.value.status, raised.value.code) == (413, "PAYLOAD_TOO_LARGE")
    await ws.assert_nothing_pending()


def test_ids_must_be_a_list_not_a_string(server):
    with server.client() as client, pytest.raises(TypeError):
        client.publish_to_users("upload.progress", {}, "alice")  # type: ignore[arg-type]


async def test_handshake_refusals_parse_with_retry_after(server_factory, clients):
    """The typed errors read real refusals: code, status and Retry-After."""
    server = server_factory("--max-connections-per-user", "1", "--max-connections", "2")
    user = new_user()
    await clients(server, user)
    async with httpx.AsyncClient() as http:
        upgrade = {
            "connection": "Upgrade",
            "upgrade": "websocket",
            "sec-websocket-version": "13",
            "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
        }
        too_many = await http.get(
            f"{server.url}/api/v1/ws/{server.token(user)}", headers=upgrade, timeout=RECV_TIMEOUT
        )
        await clients(server, new_user())
        full = await http.get(
            f"{server.url}/api/v1/ws/{server.token(new_user())}", headers=upgrade, timeout=RECV_TIMEOUT
        )
    user_limit = wsgate.errors.error_from_response(too_many)
    capacity = wsgate.errors.error_from_response(full)
    assert isinstance(user_limit, wsgate.TooManyConnections)
    assert (user_limit.status, user_limit.code, user_limit.retry_after) == (429, "TOO_MANY_CONNECTIONS", 5)
    assert isinstance(capacity, wsgate.ServerAtCapacity)
    assert (capacity.status, capacity.code, capacity.retry_after) == (503, "SERVER_AT_CAPACITY", 5)
