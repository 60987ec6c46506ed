"""Typed errors: one class per SPEC error code of the server API.

Every answer that is not a success becomes an :class:`ApiError` subclass
carrying the SPEC ``code``, the human ``detail``, the HTTP ``status`` and
``retry_after`` (whole seconds from ``Retry-After``, or ``None``). A request
that got no answer at all is a :class:`TransportError`.
"""

from __future__ import annotations

import json

import httpx

__all__ = [
    "WsgateError",
    "TransportError",
    "ApiError",
    "BadRequest",
    "Unauthorized",
    "NotFound",
    "MethodNotAllowed",
    "PayloadTooLarge",
    "TooManyConnections",
    "ServerAtCapacity",
    "Unavailable",
    "WebhookVerificationError",
]


class WsgateError(Exception):
    """Base of everything this package raises."""


class TransportError(WsgateError):
    """The request got no HTTP answer (refused, reset, timed out)."""


class ApiError(WsgateError):
    """The server answered with an error body ``{"code", "detail"}``."""

    #: The SPEC code this class stands for (``None`` on the base class).
    code_name: str | None = None

    def __init__(self, status: int, code: str, detail: str, retry_after: int | None = None) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.retry_after = retry_after


class BadRequest(ApiError):
    code_name = "BAD_REQUEST"


class Unauthorized(ApiError):
    code_name = "UNAUTHORIZED"


class NotFound(ApiError):
    code_name = "NOT_FOUND"


class MethodNotAllowed(ApiError):
    code_name = "METHOD_NOT_ALLOWED"


class PayloadTooLarge(ApiError):
    code_name = "PAYLOAD_TOO_LARGE"


class TooManyConnections(ApiError):
    code_name = "TOO_MANY_CONNECTIONS"


class ServerAtCapacity(ApiError):
    code_name = "SERVER_AT_CAPACITY"


class Unavailable(ApiError):
    """The server is shutting down (or a proxy in front of it is failing)."""

    code_name = "UNAVAILABLE"


class WebhookVerificationError(WsgateError):
    """A webhook's ``Wsgate-Signature`` is missing, malformed, stale or wrong."""


_BY_CODE: dict[str, type[ApiError]] = {
    cls.code_name: cls
    for cls in (
        BadRequest,
        Unauthorized,
        NotFound,
        MethodNotAllowed,
        PayloadTooLarge,
        TooManyConnections,
        ServerAtCapacity,
        Unavailable,
    )
    if cls.code_name
}


def retry_after_of(response: httpx.Response) -> int | None:
    raw = response.headers.get("retry-after")
    if raw is None:
        return None
    try:
        return max(0, int(raw.strip()))
    except ValueError:
        # An HTTP-date from a proxy: not something wsgate sends; ignore it.
        return None


def error_from_response(response: httpx.Response) -> ApiError:
    """The typed error for a non-2xx answer, even one without a wsgate body."""
    code = f"HTTP_{response.status_code}"
    detail = response.reason_phrase or ""
    try:
        body = json.loads(response.content)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("code"), str):
        code = body["code"]
        detail = str(body.get("detail", ""))
    elif response.status_code == 503:
        # A proxy's 503 means the same to a caller as the server's own.
        code = "UNAVAILABLE"
    cls = _BY_CODE.get(code, ApiError)
    return cls(response.status_code, code, detail, retry_after_of(response))
