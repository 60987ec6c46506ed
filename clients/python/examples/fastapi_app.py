"""A FastAPI backend on wsgate: mints a gateway token for its logged-in user
and receives the gateway's ``upload.cancel`` webhook.

Run it (next to ``wsgate serve --jwt-secret ... --api-key ...
--webhook-url http://127.0.0.1:8000/webhooks/wsgate``)::

    pip install -e 'clients/python[example]'
    WSGATE_URL=http://127.0.0.1:8080 WSGATE_API_KEY=... WSGATE_JWT_SECRET=... \\
    WSGATE_WEBHOOK_SECRET=...  \\
        uvicorn --factory examples.fastapi_app:create_app --app-dir clients/python

A browser page of the app then does::

    const { token, url } = await (await fetch("/api/realtime/token")).json();
    const ws = new WebSocket(url, ["wsgate.v1", "bearer." + token]);
"""

from __future__ import annotations

import hmac
import json
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, FastAPI, Header, HTTPException, Request, Response

import wsgate


@dataclass(frozen=True)
class Settings:
    #: Where the backend reaches the gateway's server API.
    gateway_url: str
    api_key: str
    #: The gateway's --jwt-secret: tokens minted here are accepted there.
    jwt_secret: str
    #: The gateway's --webhook-secret; without one, webhooks carry the API key.
    webhook_secret: str | None = None
    #: Where browsers reach the gateway, if not at gateway_url.
    public_url: str | None = None
    token_ttl_s: int = 900

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            gateway_url=os.environ.get("WSGATE_URL", wsgate.DEFAULT_URL),
            api_key=os.environ["WSGATE_API_KEY"],
            jwt_secret=os.environ["WSGATE_JWT_SECRET"],
            webhook_secret=os.environ.get("WSGATE_WEBHOOK_SECRET") or None,
            public_url=os.environ.get("WSGATE_PUBLIC_URL") or None,
        )


async def current_user(x_demo_user: str | None = Header(default=None)) -> str:
    """Stand-in for the app's real login (session cookie, OAuth, ...)."""
    if not x_demo_user:
        raise HTTPException(status_code=401, detail="log in first")
    return x_demo_user


def create_app(
    settings: Settings | None = None,
    on_upload_cancel: Callable[[dict[str, Any]], None] | None = None,
) -> FastAPI:
    settings = settings or Settings.from_env()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # The seed helpers would read WSGATE_URL / WSGATE_API_KEY by
        # themselves; this app passes its own settings instead.
        wsgate.set_default_client(wsgate.AsyncClient(settings.gateway_url, settings.api_key))
        yield
        await wsgate.aclose_default_client()

    app = FastAPI(title="wsgate example backend", lifespan=lifespan)
    public = (settings.public_url or settings.gateway_url).rstrip("/")
    ws_url = "ws" + public.removeprefix("http") + "/api/v1/ws"

    @app.get("/api/realtime/token")
    async def realtime_token(user: str = Depends(current_user)) -> dict[str, Any]:
        token = wsgate.mint_token(user, settings.jwt_secret, ttl=settings.token_ttl_s)
        return {"token": token, "url": ws_url, "expires_in": settings.token_ttl_s}

    @app.post("/webhooks/wsgate", status_code=204)
    async def wsgate_webhook(request: Request) -> Response:
        body = await request.body()  # the raw bytes: the signature covers them
        if settings.webhook_secret:
            try:
                event = wsgate.verify_webhook(
                    body, request.headers.get(wsgate.SIGNATURE_HEADER), settings.webhook_secret
                )
            except wsgate.WebhookVerificationError as error:
                raise HTTPException(status_code=401, detail=str(error)) from error
        else:
            presented = request.headers.get("authorization", "")
            if not hmac.compare_digest(presented.encode(), f"Bearer {settings.api_key}".encode()):
                raise HTTPException(status_code=401, detail="not the gateway")
            event = json.loads(body)
        if event.get("type") == "upload.cancel":
            upload_id = str(event["data"]["upload_id"])
            # The app's own work goes here (stop the transfer, delete the part file).
            if on_upload_cancel is not None:
                on_upload_cancel(event)
            await wsgate.broadcast_system_notification(
                f"Upload {upload_id} was cancelled",
                target_users=[event["user_id"]],
                upload_id=upload_id,
            )
        # Any 2xx ends the gateway's retries, also for types this app ignores.
        return Response(status_code=204)

    return app
