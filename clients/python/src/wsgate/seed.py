"""The seed module's three broadcast helpers, same names, signatures and
defaults, sent through wsgate's server API.

A call site of the FastAPI module keeps working with only its import
changed::

    from wsgate import (
        broadcast_system_notification,
        broadcast_file_processing_status,
        broadcast_review_updated,
    )

What the clients receive is what the seed's helpers sent (same ``type``,
same ``data`` members, same targets), with the gateway's envelope
(``timestamp`` RFC 3339 with ``Z``, unique ``id``). Like the seed, an empty
``target_users`` means "no target" (everyone, or the subscribers).

The helpers use one :class:`~wsgate.AsyncClient` per event loop, configured
from ``WSGATE_URL`` and ``WSGATE_API_KEY`` on first use; replace it with
:func:`set_default_client`, close it with :func:`aclose_default_client`.
Unlike the seed (which only logged a failed send to one socket), a failed
API call raises a :class:`~wsgate.WsgateError`.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

from .client import AsyncClient
from .models import Published

__all__ = [
    "broadcast_system_notification",
    "broadcast_review_updated",
    "broadcast_file_processing_status",
    "default_client",
    "set_default_client",
    "aclose_default_client",
]

# An httpx.AsyncClient's connections belong to the loop that opened them,
# so each running loop gets its own client.
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncClient] = weakref.WeakKeyDictionary()


def default_client() -> AsyncClient:
    """The running loop's client, made from the environment on first use."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        client = AsyncClient()
        _clients[loop] = client
    return client


def set_default_client(client: AsyncClient) -> None:
    """Makes the helpers use ``client`` on the running loop."""
    _clients[asyncio.get_running_loop()] = client


async def aclose_default_client() -> None:
    """Closes the running loop's client (e.g. in an app's shutdown hook)."""
    client = _clients.pop(asyncio.get_running_loop(), None)
    if client is not None:
        await client.aclose()


async def broadcast_system_notification(
    message: str,
    level: str = "info",
    target_users: list[str] | None = None,
    **kwargs: Any,
) -> Published:
    """Broadcast system notification to users (to everyone without targets)."""
    return await default_client().system_notification(message, level, target_users or None, **kwargs)


async def broadcast_review_updated(
    review_id: str,
    changes: dict[str, Any],
    target_users: list[str] | None = None,
) -> Published:
    """Broadcast review update to relevant users (to subscribers without targets)."""
    return await default_client().review_updated(review_id, changes, target_users or None)


async def broadcast_file_processing_status(
    user_id: str,
    file_id: str,
    status: str,
    progress: int | None = None,
    **kwargs: Any,
) -> Published:
    """Broadcast file processing status to a user.

    ``**kwargs`` is accepted and, as in the seed, not sent.
    """
    return await default_client().file_status(file_id, user_id, status, progress)
