"""Python client for the wsgate WebSocket gateway.

* :class:`Client` / :class:`AsyncClient`: every server API call (SPEC §4).
* :func:`broadcast_system_notification`, :func:`broadcast_review_updated`,
  :func:`broadcast_file_processing_status`: the FastAPI seed module's
  helpers, same signatures (``wsgate.seed``).
* :func:`mint_token`: client JWTs for your logged-in users.
* :func:`verify_webhook`: checks ``Wsgate-Signature`` on the gateway's calls.

Configuration comes from ``WSGATE_URL`` and ``WSGATE_API_KEY`` unless given.
"""

from .client import DEFAULT_URL, AsyncClient, Client
from .errors import (
    ApiError,
    BadRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    ServerAtCapacity,
    TooManyConnections,
    TransportError,
    Unauthorized,
    Unavailable,
    WebhookVerificationError,
    WsgateError,
)
from .models import EVENT_TYPES, ConnectionInfo, Published, ShardStats, Stats
from .seed import (
    aclose_default_client,
    broadcast_file_processing_status,
    broadcast_review_updated,
    broadcast_system_notification,
    default_client,
    set_default_client,
)
from .tokens import mint_token
from .webhooks import SIGNATURE_HEADER, sign_webhook, verify_webhook

__all__ = [
    "DEFAULT_URL",
    "EVENT_TYPES",
    "SIGNATURE_HEADER",
    "ApiError",
    "AsyncClient",
    "BadRequest",
    "Client",
    "ConnectionInfo",
    "MethodNotAllowed",
    "NotFound",
    "PayloadTooLarge",
    "Published",
    "ServerAtCapacity",
    "ShardStats",
    "Stats",
    "TooManyConnections",
    "TransportError",
    "Unauthorized",
    "Unavailable",
    "WebhookVerificationError",
    "WsgateError",
    "aclose_default_client",
    "broadcast_file_processing_status",
    "broadcast_review_updated",
    "broadcast_system_notification",
    "default_client",
    "mint_token",
    "set_default_client",
    "sign_webhook",
    "verify_webhook",
]
