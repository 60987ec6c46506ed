"""The seed's three helpers, called as the seed's call sites call them,
deliver to real WebSocket clients what the FastAPI module's helpers sent:
the same type, the same data members and values, the same targets.

``seed_*`` below are the message bodies the seed module builds
(websocket-module.md, "Helper Functions"), copied; only the envelope's
``timestamp`` and ``id`` values differ by nature (now and unique).
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import pytest
from conftest import assert_envelope_fields, new_user

import wsgate


def seed_system_notification(message: str, level: str = "info", **kwargs: Any) -> dict[str, Any]:
    return {
        "type": "system.notification",
        "data": {"message": message, "level": level, "timestamp": "*", **kwargs},
    }


def seed_review_updated(review_id: str, changes: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "review.updated",
        "data": {"review_id": review_id, "changes": changes, "timestamp": "*"},
    }


def seed_file_processing_status(file_id: str, status: str, progress: int | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"file_id": file_id, "status": status, "timestamp": "*"}
    if progress is not None:
        data["progress"] = progress
    return {"type": "file.processing" if status == "processing" else "file.ready", "data": data}


def assert_seed_message(received: dict[str, Any], expected: dict[str, Any]) -> None:
    assert_envelope_fields(received)
    assert received["type"] == expected["type"]
    assert set(received["data"]) == set(expected["data"]), received["data"]
    for key, value in expected["data"].items():
        if value == "*":
            datetime.fromisoformat(received["data"][key].replace("Z", "+00:00"))
        else:
            assert received["data"][key] == value, key
    assert isinstance(received["id"], str) and received["id"]


@pytest.fixture
async def seed_env(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Any]:
    """Points the helpers at a server through WSGATE_URL / WSGATE_API_KEY only."""

    def configure(server: Any) -> None:
        monkeypatch.setenv("WSGATE_URL", server.url)
        monkeypatch.setenv("WSGATE_API_KEY", server.api_key)

    yield configure
    await wsgate.aclose_default_client()


def test_signatures_and_defaults_are_the_seeds():
    def broadcast_system_notification(
        message: str, level: str = "info", target_users: list[str] | None = None, **kwargs: Any
    ) -> None: ...

    def broadcast_review_updated(
        review_id: str, changes: dict[str, Any], target_users: list[str] | None = None
    ) -> None: ...

    def broadcast_file_processing_status(
        user_id: str, file_id: str, status: str, progress: int | None = None, **kwargs: Any
    ) -> None: ...

    for seed in (
        broadcast_system_notification,
        broadcast_review_updated,
        broadcast_file_processing_status,
    ):
        ours = getattr(wsgate, seed.__name__)
        assert inspect.iscoroutinefunction(ours)
        expected = [(p.name, p.kind, p.default) for p in inspect.signature(seed).parameters.values()]
        actual = [(p.name, p.kind, p.default) for p in inspect.signature(ours).parameters.values()]
        assert actual == expected, seed.__name__


async def test_system_notification_without_targets_reaches_everyone(server_factory, clients, seed_env):
    server = server_factory()
    seed_env(server)
    subscribed, unsubscribed = await clients(server, new_user()), await clients(server, new_user())
    await subscribed.subscribe("system.notification")

    await wsgate.broadcast_system_notification(
        message="System maintenance starting in 5 minutes", level="warning"
    )

    expected = seed_system_notification("System maintenance starting in 5 minutes", "warning")
    for ws in (subscribed, unsubscribed):
        assert_seed_message(await ws.recv(), expected)


async def test_system_notification_default_level_and_kwargs(server_factory, clients, seed_env):
    server = server_factory()
    seed_env(server)
    ws = await clients(server, new_user())

    await wsgate.broadcast_system_notification("hello", action_url="/x", ttl=5)

    assert_seed_message(await ws.recv(), seed_system_notification("hello", "info", action_url="/x", ttl=5))


async def test_system_notification_to_target_users_only(server_factory, clients, seed_env):
    server = server_factory()
    seed_env(server)
    alice, bob = new_user(), new_user()
    a1, a2, b = await clients(server, alice), await clients(server, alice), await clients(server, bob)

    published = await wsgate.broadcast_system_notification("for you", target_users=[alice])

    assert published.delivered == 2
    for ws in (a1, a2):
        assert_seed_message(await ws.recv(), seed_system_notification("for you"))
    await b.assert_nothing_pending()


async def test_empty_target_users_means_everyone_as_in_the_seed(server_factory, clients, seed_env):
    """The seed tests ``if target_users:``, so ``[]`` broadcasts."""
    server = server_factory()
    seed_env(server)
    everyone = [await clients(server, new_user()) for _ in range(2)]

    published = await wsgate.broadcast_system_notification("all of you", target_users=[])

    assert published.delivered == 2
    for ws in everyone:
        assert_seed_message(await ws.recv(), seed_system_notification("all of you"))


async def test_review_updated_without_targets_reaches_subscribers(server_factory, clients, seed_env):
    server = server_factory()
    seed_env(server)
    subscriber, other = await clients(server, new_user()), await clients(server, new_user())
    await subscriber.subscribe("review.updated")
    changes = {"status": "approved", "updated_by": "admin"}

    published = await wsgate.broadcast_review_updated("review_789", changes)

    assert published.delivered == 1
    assert_seed_message(await subscriber.recv(), seed_review_updated("review_789", changes))
    await other.assert_nothing_pending()


async def test_review_updated_to_target_users_subscribed_or_not(server_factory, clients, seed_env):
    server = server_factory()
    seed_env(server)
    a = await clients(server, "123")
    b = await clients(server, "456")
    c = await clients(server, new_user())
    await c.subscribe("review.updated")
    changes = {"status": "approved", "updated_by": "admin"}

    published = await wsgate.broadcast_review_updated(
        review_id="review_789", changes=changes, target_users=["123", "456"]
    )

    assert published.delivered == 2
    for ws in (a, b):
        assert_seed_message(await ws.recv(), seed_review_updated("review_789", changes))
    await c.assert_nothing_pending()


@pytest.mark.parametrize(
    ("status", "progress"),
    [("processing", 75), ("processing", None), ("completed", 100), ("failed", None)],
)
async def test_file_processing_status_to_the_user(server_factory, clients, seed_env, status, progress):
    server = server_factory()
    seed_env(server)
    user = new_user()
    mine, other = await clients(server, user), await clients(server, new_user())
    await other.subscribe("file.processing", "file.ready")

    published = await wsgate.broadcast_file_processing_status(
        user_id=user, file_id="file_456", status=status, progress=progress, ignored="by the seed"
    )

    assert published.delivered == 1
    assert_seed_message(await mine.recv(), seed_file_processing_status("file_456", status, progress))
    await other.assert_nothing_pending()


async def test_helpers_fail_loudly_without_a_reachable_gateway(monkeypatch, seed_env):
    monkeypatch.setenv("WSGATE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("WSGATE_API_KEY", "k")
    with pytest.raises(wsgate.TransportError):
        await wsgate.broadcast_system_notification("nobody hears this")
