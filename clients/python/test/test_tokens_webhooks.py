"""mint_token against the real server's verifier; verify_webhook against
signatures computed here from the v2 definition (HMAC-SHA256 with the
secret over ``t + "." + body``, hex), independently of ``sign_webhook``."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import timedelta

import pytest
import websockets
from conftest import connect, new_user

import wsgate

SECRET = "whsec-test-0123456789"
BODY = json.dumps(
    {
        "type": "upload.cancel",
        "user_id": "123",
        "connection_id": "c-1",
        "data": {"upload_id": "up-9"},
        "id": "m-1",
        "timestamp": "2026-12-01T10:00:00.000Z",
    }
).encode()
NOW = 1_790_000_000


def reference_signature(secret: str, t: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()


# --- tokens -------------------------------------------------------------------


async def test_minted_token_opens_a_connection_as_its_user(server):
    user = new_user()
    ws = await connect(server, user)
    assert ws.user_id == user
    await ws.close()


async def test_numeric_sub_and_extra_claims(server):
    token = wsgate.mint_token(42, server.secret, ttl=timedelta(minutes=5), claims={"role": "admin"})
    async with websockets.connect(f"{server.ws_url}/api/v1/ws?token={token}") as ws:
        established = json.loads(await ws.recv())
    assert established["data"]["user_id"] == "42"


async def test_expired_and_wrongly_signed_tokens_are_refused(server):
    for token in (
        wsgate.mint_token(new_user(), server.secret, ttl=60, now=time.time() - 3600),
        wsgate.mint_token(new_user(), "not-the-secret-" * 3),
    ):
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(f"{server.ws_url}/api/v1/ws/{token}")
        assert refused.value.response.status_code == 401


async def test_issuer_and_audience_when_the_server_checks_them(server_factory):
    server = server_factory("--jwt-issuer", "backend", "--jwt-audience", "wsgate")
    good = wsgate.mint_token("u1", server.secret, issuer="backend", audience="wsgate")
    async with websockets.connect(f"{server.ws_url}/api/v1/ws/{good}") as ws:
        assert json.loads(await ws.recv())["type"] == "connection.established"
    bad = wsgate.mint_token("u1", server.secret, issuer="someone-else", audience="wsgate")
    with pytest.raises(websockets.InvalidStatus):
        await websockets.connect(f"{server.ws_url}/api/v1/ws/{bad}")


def test_key_from_the_environment(monkeypatch):
    monkeypatch.delenv("WSGATE_JWT_SECRET", raising=False)
    with pytest.raises(ValueError):
        wsgate.mint_token("u1")
    monkeypatch.setenv("WSGATE_JWT_SECRET", "from-env-0123456789abcdef0123456789")
    import jwt

    claims = jwt.decode(
        wsgate.mint_token("u1", ttl=10), "from-env-0123456789abcdef0123456789", algorithms=["HS256"]
    )
    assert claims["sub"] == "u1" and claims["exp"] - claims["iat"] == 10


# --- webhook signatures ---------------------------------------------------------


def test_valid_signature_returns_the_body():
    header = f"t={NOW},v1={reference_signature(SECRET, NOW, BODY)}"
    assert wsgate.verify_webhook(BODY, header, SECRET, now=NOW + 10) == json.loads(BODY)


def test_sign_webhook_matches_the_reference():
    assert wsgate.sign_webhook(BODY, SECRET, NOW) == f"t={NOW},v1={reference_signature(SECRET, NOW, BODY)}"


def test_any_of_several_v1_signatures_may_match():
    """Secret rotation: the old and the new signature side by side."""
    header = (
        f"t={NOW},v1={reference_signature('old-secret', NOW, BODY)},"
        f"v1={reference_signature(SECRET, NOW, BODY)},v0=ignored"
    )
    assert wsgate.verify_webhook(BODY, header, SECRET, now=NOW)["type"] == "upload.cancel"


@pytest.mark.parametrize(
    ("header", "body", "now", "message"),
    [
        (None, BODY, NOW, "no Wsgate-Signature"),
        ("", BODY, NOW, "no Wsgate-Signature"),
        (f"v1={reference_signature(SECRET, NOW, BODY)}", BODY, NOW, "exactly one t="),
        (f"t={NOW}", BODY, NOW, "no v1"),
        (f"t=soon,v1={reference_signature(SECRET, NOW, BODY)}", BODY, NOW, "exactly one t="),
        ("garbage", BODY, NOW, "malformed"),
        # A body changed by one byte.
        (
            f"t={NOW},v1={reference_signature(SECRET, NOW, BODY)}",
            BODY.replace(b"up-9", b"up-8"),
            NOW,
            "does not match",
        ),
        # Signed with another secret.
        (f"t={NOW},v1={reference_signature('other', NOW, BODY)}", BODY, NOW, "does not match"),
        # The signature of another timestamp (t is covered by the MAC).
        (f"t={NOW + 1},v1={reference_signature(SECRET, NOW, BODY)}", BODY, NOW, "does not match"),
        # Replayed too late, or dated in the future.
        (f"t={NOW},v1={reference_signature(SECRET, NOW, BODY)}", BODY, NOW + 301, "from now"),
        (f"t={NOW + 301},v1={reference_signature(SECRET, NOW + 301, BODY)}", BODY, NOW, "from now"),
    ],
    ids=[
        "missing",
        "empty",
        "no-timestamp",
        "no-signature",
        "bad-timestamp",
        "malformed",
        "body-changed",
        "other-secret",
        "other-timestamp",
        "too-old",
        "future",
    ],
)
def test_invalid_signatures_are_refused(header, body, now, message):
    with pytest.raises(wsgate.WebhookVerificationError, match=message):
        wsgate.verify_webhook(body, header, SECRET, now=now)


def test_max_age_is_configurable():
    header = f"t={NOW},v1={reference_signature(SECRET, NOW, BODY)}"
    assert wsgate.verify_webhook(BODY, header, SECRET, now=NOW + 900, max_age=1000)
    with pytest.raises(wsgate.WebhookVerificationError):
        wsgate.verify_webhook(BODY, header, SECRET, now=NOW + 6, max_age=5)
