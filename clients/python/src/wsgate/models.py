"""What the server API answers, as frozen dataclasses.

Parsers read the fields SPEC §4 names and ignore the rest, so a newer server
that adds fields does not break an older client.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Published", "ShardStats", "Stats", "ConnectionInfo", "EVENT_TYPES"]

#: The subscribable events (SPEC §3); ``publish`` accepts only these.
EVENT_TYPES: tuple[str, ...] = (
    "upload.progress",
    "upload.completed",
    "upload.error",
    "upload.cancelled",
    "review.updated",
    "review.created",
    "review.deleted",
    "system.notification",
    "system.maintenance",
    "user.status_changed",
    "file.processing",
    "file.ready",
)


@dataclass(frozen=True)
class Published:
    """The answer of the four publishing calls."""

    #: The message's ``id``, as the clients receive it.
    id: str
    #: Connections the message was handed to.
    delivered: int

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Published:
        return cls(id=str(body["id"]), delivered=int(body["delivered"]))


@dataclass(frozen=True)
class ShardStats:
    connections: int
    users: int

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> ShardStats:
        return cls(connections=int(body["connections"]), users=int(body.get("users", 0)))


@dataclass(frozen=True)
class Stats:
    """``GET /api/v1/stats``: this node's numbers."""

    node_id: str
    connections: int
    users: int
    shards: tuple[ShardStats, ...]
    messages_in: int
    messages_out: int
    rate_limited: int
    uptime_s: int

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Stats:
        return cls(
            node_id=str(body["node_id"]),
            connections=int(body["connections"]),
            users=int(body["users"]),
            shards=tuple(ShardStats.from_json(s) for s in body["shards"]),
            messages_in=int(body["messages_in"]),
            messages_out=int(body["messages_out"]),
            rate_limited=int(body["rate_limited"]),
            uptime_s=int(body["uptime_s"]),
        )


@dataclass(frozen=True)
class ConnectionInfo:
    """One entry of ``GET /api/v1/connections``."""

    connection_id: str
    user_id: str
    #: RFC 3339 UTC with milliseconds.
    connected_at: str
    last_activity: str
    #: Sorted event names.
    subscriptions: tuple[str, ...]
    messages_in: int
    messages_out: int

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> ConnectionInfo:
        return cls(
            connection_id=str(body["connection_id"]),
            user_id=str(body["user_id"]),
            connected_at=str(body["connected_at"]),
            last_activity=str(body["last_activity"]),
            subscriptions=tuple(str(s) for s in body["subscriptions"]),
            messages_in=int(body["messages_in"]),
            messages_out=int(body["messages_out"]),
        )
