"""Checking the gateway's webhook calls (``upload.cancel``, v2's
``user.online``/``user.offline``) in the backend.

With ``--webhook-secret S`` each call carries
``Wsgate-Signature: t=UNIX_SECONDS,v1=HEX``: HEX is HMAC-SHA256 with S over
``t + "." + body`` (the raw body bytes, before any JSON parsing). Several
``v1=`` entries may appear (any one matching is enough), so a secret can be
rotated; unknown schemes are ignored. ``t`` must be within ``max_age``
seconds of now, in either direction, which bounds replays.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

from .errors import WebhookVerificationError

__all__ = ["SIGNATURE_HEADER", "verify_webhook", "sign_webhook"]

SIGNATURE_HEADER = "Wsgate-Signature"


def _key(secret: str | bytes) -> bytes:
    return secret.encode() if isinstance(secret, str) else secret


def _mac(secret: str | bytes, timestamp: int, body: bytes) -> str:
    signed = str(timestamp).encode() + b"." + body
    return hmac.new(_key(secret), signed, hashlib.sha256).hexdigest()


def sign_webhook(body: bytes, secret: str | bytes, timestamp: int | None = None) -> str:
    """The ``Wsgate-Signature`` value the gateway sends for ``body``."""
    t = int(time.time()) if timestamp is None else timestamp
    return f"t={t},v1={_mac(secret, t, body)}"


def verify_webhook(
    body: bytes,
    signature: str | None,
    secret: str | bytes,
    *,
    max_age: float = 300,
    now: float | None = None,
) -> Any:
    """The parsed JSON body, if ``signature`` (the header's value) is valid.

    Raises :class:`~wsgate.WebhookVerificationError` when the header is
    missing or malformed, its time is more than ``max_age`` seconds away,
    or no ``v1`` signature matches.
    """
    if not signature:
        raise WebhookVerificationError(f"no {SIGNATURE_HEADER} header")
    if not secret:
        raise WebhookVerificationError("no webhook secret configured")
    timestamps: list[str] = []
    candidates: list[str] = []
    for part in signature.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep:
            raise WebhookVerificationError(f"malformed {SIGNATURE_HEADER}: {part!r}")
        if name == "t":
            timestamps.append(value)
        elif name == "v1":
            candidates.append(value.lower())
    if len(timestamps) != 1 or not timestamps[0].isdigit():
        raise WebhookVerificationError(f"{SIGNATURE_HEADER} needs exactly one t=UNIX_SECONDS")
    if not candidates:
        raise WebhookVerificationError(f"{SIGNATURE_HEADER} has no v1 signature")
    timestamp = int(timestamps[0])
    current = time.time() if now is None else now
    if abs(current - timestamp) > max_age:
        raise WebhookVerificationError(
            f"signature time {timestamp} is {current - timestamp:+.0f}s from now (max {max_age}s)"
        )
    expected = _mac(secret, timestamp, body)
    # Check every candidate, so timing does not tell which one matched.
    matched = False
    for candidate in candidates:
        matched |= hmac.compare_digest(candidate.encode(), expected.encode())
    if not matched:
        raise WebhookVerificationError("signature does not match")
    try:
        return json.loads(body)
    except ValueError as error:
        raise WebhookVerificationError(f"body is not JSON: {error}") from error
