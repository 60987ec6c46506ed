"""Minting client tokens in the backend (what ``wsgate token`` does).

The backend that logs its users in hands each browser a short-lived JWT
signed with the gateway's ``--jwt-secret`` (HS256), or with the private key
matching ``--jwt-public-key`` (RS256/ES256, which needs
``pip install "PyJWT[crypto]"``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import jwt

__all__ = ["mint_token"]


def mint_token(
    sub: str | int,
    key: str | bytes | None = None,
    *,
    ttl: float | timedelta = 3600,
    claims: Mapping[str, Any] | None = None,
    algorithm: str = "HS256",
    issuer: str | None = None,
    audience: str | None = None,
    now: float | None = None,
) -> str:
    """A JWT for user ``sub`` that expires ``ttl`` (seconds or timedelta) from now.

    ``key`` defaults to ``WSGATE_JWT_SECRET``. ``claims`` are added as they
    are (``iss``/``aud`` when the gateway checks them: ``--jwt-issuer``,
    ``--jwt-audience``).
    """
    if key is None:
        key = os.environ.get("WSGATE_JWT_SECRET")
    if not key:
        raise ValueError("no signing key: pass key= or set WSGATE_JWT_SECRET")
    if str(sub) == "":
        raise ValueError("sub must be a non-empty string or a number")
    seconds = ttl.total_seconds() if isinstance(ttl, timedelta) else float(ttl)
    issued = int(time.time() if now is None else now)
    payload: dict[str, Any] = {"sub": str(sub), "iat": issued, "exp": issued + int(seconds)}
    if issuer is not None:
        payload["iss"] = issuer
    if audience is not None:
        payload["aud"] = audience
    payload.update(claims or {})
    return jwt.encode(payload, key, algorithm=algorithm)
