"""``Client`` and ``AsyncClient``: one method per server API call (SPEC §4).

Both share :class:`_Calls`, which turns a method's arguments into a
:class:`_Call` (method, path, body, how to read the answer, whether a retry
is safe); the two classes differ only in how they send it.

Retries: a call is retried with exponential backoff (full jitter, honouring
``Retry-After``) only where repeating it cannot deliver a message twice:

* reads (``stats``, ``connections``, ``health``, ``metrics``) and the
  idempotent admin calls (``disconnect``, ``deactivate_user``,
  ``activate_user``): on any transport error and on 502/503/504;
* publishes: only when the connection could not even be opened (the request
  never left this process). Anything later (a reset, a timeout, a 503 while
  the server shuts down) may have delivered the message, so it is raised.
  Once the server has ``idempotency_key`` (SPEC v2 §7) publishes can be
  retried like reads.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx

from .errors import TransportError, error_from_response, retry_after_of
from .models import ConnectionInfo, Published, Stats

__all__ = ["Client", "AsyncClient", "DEFAULT_URL"]

#: The server's default ``--listen`` address.
DEFAULT_URL = "http://127.0.0.1:8080"

T = TypeVar("T")
Ids = Sequence["str | int"]

_RETRY_STATUSES = frozenset({502, 503, 504})
# Exceptions raised before a single byte of the request was written.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


@dataclass(frozen=True)
class _Call(Generic[T]):
    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    body: Any = None
    params: Mapping[str, str] | None = None
    #: Safe to send again after it may have reached the server.
    repeatable: bool = False
    #: A repeat answering 404 means an earlier attempt already did it.
    not_found_after_retry_is_done: bool = False


@dataclass
class _Done(Generic[T]):
    value: T


@dataclass
class _Retry:
    delay: float


@dataclass
class _Fail:
    error: Exception


def _segment(value: str | int) -> str:
    # Characters legal in a path segment stay as they are: a v1 server
    # matches path ids literally.
    return quote(str(value), safe="!$&'()*+,;=:@")


def _id_list(name: str, ids: Ids | None) -> list[str | int] | None:
    if ids is None:
        return None
    if isinstance(ids, (str, bytes)):
        raise TypeError(f"{name} must be a list of ids, not a single string")
    return list(ids)


def _none(_: httpx.Response) -> None:
    return None


def _published(response: httpx.Response) -> Published:
    return Published.from_json(response.json())


class _Calls:
    """Configuration and the calls, independent of how they are sent."""

    def __init__(
        self,
        url: str | None,
        api_key: str | None,
        *,
        timeout: float,
        retries: int,
        backoff: float,
        max_backoff: float,
    ) -> None:
        self.url = (url or os.environ.get("WSGATE_URL") or DEFAULT_URL).rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("WSGATE_API_KEY")
        self.timeout = timeout
        self.retries = max(0, retries)
        self.backoff = backoff
        self.max_backoff = max_backoff

    def _headers(self) -> dict[str, str]:
        headers = {"user-agent": "wsgate-python"}
        if self.api_key:
            headers["authorization"] = f"Bearer {self.api_key}"
        return headers

    # --- the calls ------------------------------------------------------

    def _publish(
        self,
        type: str,
        data: Any,
        users: Ids | None,
        connections: Ids | None,
        all: bool,
    ) -> _Call[Published]:
        body: dict[str, Any] = {"type": type, "data": {} if data is None else data}
        users_list = _id_list("users", users)
        connections_list = _id_list("connections", connections)
        if users_list is not None:
            body["users"] = users_list
        if connections_list is not None:
            body["connections"] = connections_list
        if all:
            body["all"] = True
        return _Call("POST", "/api/v1/events", _published, body)

    def _notification(
        self, message: str, level: str, users: Ids | None, extra: Mapping[str, Any]
    ) -> _Call[Published]:
        body: dict[str, Any] = {**extra, "message": message, "level": level}
        users_list = _id_list("users", users)
        if users_list is not None:
            body["users"] = users_list
        return _Call("POST", "/api/v1/notifications", _published, body)

    def _review_updated(
        self, review_id: str, changes: Mapping[str, Any] | None, users: Ids | None
    ) -> _Call[Published]:
        body: dict[str, Any] = {"changes": dict(changes or {})}
        users_list = _id_list("users", users)
        if users_list is not None:
            body["users"] = users_list
        path = f"/api/v1/reviews/{_segment(review_id)}/updated"
        return _Call("POST", path, _published, body)

    def _file_status(
        self, file_id: str, user_id: str | int, status: str, progress: float | None
    ) -> _Call[Published]:
        body: dict[str, Any] = {"user_id": user_id, "status": status}
        if progress is not None:
            body["progress"] = progress
        path = f"/api/v1/files/{_segment(file_id)}/status"
        return _Call("POST", path, _published, body)

    def _stats(self) -> _Call[Stats]:
        return _Call("GET", "/api/v1/stats", lambda r: Stats.from_json(r.json()), repeatable=True)

    def _connections(self, user_id: str | int | None) -> _Call[list[ConnectionInfo]]:
        params = None if user_id is None else {"user_id": str(user_id)}
        return _Call(
            "GET",
            "/api/v1/connections",
            lambda r: [ConnectionInfo.from_json(c) for c in r.json()],
            params=params,
            repeatable=True,
        )

    def _disconnect(self, connection_id: str) -> _Call[None]:
        return _Call(
            "DELETE",
            f"/api/v1/connections/{_segment(connection_id)}",
            _none,
            repeatable=True,
            not_found_after_retry_is_done=True,
        )

    def _user_action(self, user_id: str | int, action: str) -> _Call[None]:
        path = f"/api/v1/users/{_segment(user_id)}/{action}"
        return _Call("POST", path, _none, repeatable=True)

    def _health(self) -> _Call[dict[str, Any]]:
        return _Call("GET", "/health", lambda r: dict(r.json()), repeatable=True)

    def _metrics(self) -> _Call[str]:
        return _Call("GET", "/metrics", lambda r: r.text, repeatable=True)

    # --- retry decisions, shared by both senders ------------------------

    def _delay(self, attempt: int, retry_after: int | None) -> float:
        delay = random.uniform(0.5, 1.0) * min(self.max_backoff, self.backoff * 2.0**attempt)
        if retry_after is not None:
            delay = max(delay, min(float(retry_after), self.max_backoff))
        return delay

    def _after_exception(self, call: _Call[Any], attempt: int, error: httpx.TransportError) -> _Retry | _Fail:
        may_repeat = call.repeatable or isinstance(error, _NOT_SENT)
        if may_repeat and attempt < self.retries:
            return _Retry(self._delay(attempt, None))
        wrapped = TransportError(f"{call.method} {call.path}: {error!r}")
        wrapped.__cause__ = error
        return _Fail(wrapped)

    def _request(self, call: _Call[Any]) -> dict[str, Any]:
        """The arguments of ``httpx`` ``request`` for one attempt at ``call``."""
        return {
            "method": call.method,
            "url": self.url + call.path,
            "json": call.body,
            "params": call.params,
            "headers": self._headers(),
        }

    def _next(
        self, call: _Call[T], attempt: int, answer: httpx.Response | httpx.TransportError
    ) -> _Done[T] | _Retry:
        """What an attempt's answer means: the value, or a retry; raises the error."""
        outcome: _Done[T] | _Retry | _Fail
        if isinstance(answer, httpx.TransportError):
            outcome = self._after_exception(call, attempt, answer)
        else:
            outcome = self._after_response(call, attempt, answer)
        if isinstance(outcome, _Fail):
            raise outcome.error
        return outcome

    def _after_response(
        self, call: _Call[T], attempt: int, response: httpx.Response
    ) -> _Done[T] | _Retry | _Fail:
        if response.is_success:
            return _Done(call.parse(response))
        if response.status_code == 404 and attempt > 0 and call.not_found_after_retry_is_done:
            return _Done(call.parse(response))
        if call.repeatable and response.status_code in _RETRY_STATUSES and attempt < self.retries:
            return _Retry(self._delay(attempt, retry_after_of(response)))
        return _Fail(error_from_response(response))


class Client(_Calls):
    """Blocking client of the server API.

    ``url`` and ``api_key`` default to ``WSGATE_URL`` and ``WSGATE_API_KEY``
    (and the URL to ``http://127.0.0.1:8080``). Use as a context manager, or
    call :meth:`close`.
    """

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.2,
        max_backoff: float = 5.0,
        http_client: httpx.Client | None = None,
    ) -> None:
        super().__init__(
            url, api_key, timeout=timeout, retries=retries, backoff=backoff, max_backoff=max_backoff
        )
        self._http = http_client or httpx.Client(timeout=timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _run(self, call: _Call[T]) -> T:
        attempt = 0
        while True:
            answer: httpx.Response | httpx.TransportError
            try:
                answer = self._http.request(**self._request(call))
            except httpx.TransportError as error:
                answer = error
            outcome = self._next(call, attempt, answer)
            if isinstance(outcome, _Done):
                return outcome.value
            time.sleep(outcome.delay)
            attempt += 1

    def publish(
        self,
        type: str,
        data: Any = None,
        *,
        users: Ids | None = None,
        connections: Ids | None = None,
        all: bool = False,
    ) -> Published:
        """``POST /api/v1/events`` with any combination of targets."""
        return self._run(self._publish(type, data, users, connections, all))

    def publish_to_users(self, type: str, data: Any, users: Ids) -> Published:
        """To every connection of ``users``, subscribed or not."""
        return self._run(self._publish(type, data, users, None, False))

    def publish_to_connections(self, type: str, data: Any, connections: Ids) -> Published:
        """To the named connections, subscribed or not."""
        return self._run(self._publish(type, data, None, connections, False))

    def publish_to_subscribers(self, type: str, data: Any = None) -> Published:
        """To the connections subscribed to ``type``."""
        return self._run(self._publish(type, data, None, None, False))

    def publish_to_all(self, type: str, data: Any = None) -> Published:
        """To every connection."""
        return self._run(self._publish(type, data, None, None, True))

    def system_notification(
        self, message: str, level: str = "info", users: Ids | None = None, **extra: Any
    ) -> Published:
        """``system.notification``: to ``users`` if given (even empty), else to everyone."""
        return self._run(self._notification(message, level, users, extra))

    def review_updated(
        self, review_id: str, changes: Mapping[str, Any] | None = None, users: Ids | None = None
    ) -> Published:
        """``review.updated``: to ``users`` if given, else to its subscribers."""
        return self._run(self._review_updated(review_id, changes, users))

    def file_status(
        self, file_id: str, user_id: str | int, status: str, progress: float | None = None
    ) -> Published:
        """``file.processing`` (status ``processing``) or ``file.ready``, to the user."""
        return self._run(self._file_status(file_id, user_id, status, progress))

    def stats(self) -> Stats:
        return self._run(self._stats())

    def connections(self, user_id: str | int | None = None) -> list[ConnectionInfo]:
        return self._run(self._connections(user_id))

    def disconnect(self, connection_id: str) -> None:
        """Closes the connection with 4003; :class:`~wsgate.NotFound` if unknown."""
        self._run(self._disconnect(connection_id))

    def deactivate_user(self, user_id: str | int) -> None:
        """Closes the user's connections with 4003 and refuses new ones."""
        self._run(self._user_action(user_id, "deactivate"))

    def activate_user(self, user_id: str | int) -> None:
        self._run(self._user_action(user_id, "activate"))

    def health(self) -> dict[str, Any]:
        return self._run(self._health())

    def metrics(self) -> str:
        return self._run(self._metrics())


class AsyncClient(_Calls):
    """The asyncio twin of :class:`Client`: same methods, awaited."""

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.2,
        max_backoff: float = 5.0,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        super().__init__(
            url, api_key, timeout=timeout, retries=retries, backoff=backoff, max_backoff=max_backoff
        )
        self._http = http_client or httpx.AsyncClient(timeout=timeout)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _run(self, call: _Call[T]) -> T:
        attempt = 0
        while True:
            answer: httpx.Response | httpx.TransportError
            try:
                answer = await self._http.request(**self._request(call))
            except httpx.TransportError as error:
                answer = error
            outcome = self._next(call, attempt, answer)
            if isinstance(outcome, _Done):
                return outcome.value
            await asyncio.sleep(outcome.delay)
            attempt += 1

    async def publish(
        self,
        type: str,
        data: Any = None,
        *,
        users: Ids | None = None,
        connections: Ids | None = None,
        all: bool = False,
    ) -> Published:
        return await self._run(self._publish(type, data, users, connections, all))

    async def publish_to_users(self, type: str, data: Any, users: Ids) -> Published:
        return await self._run(self._publish(type, data, users, None, False))

    async def publish_to_connections(self, type: str, data: Any, connections: Ids) -> Published:
        return await self._run(self._publish(type, data, None, connections, False))

    async def publish_to_subscribers(self, type: str, data: Any = None) -> Published:
        return await self._run(self._publish(type, data, None, None, False))

    async def publish_to_all(self, type: str, data: Any = None) -> Published:
        return await self._run(self._publish(type, data, None, None, True))

    async def system_notification(
        self, message: str, level: str = "info", users: Ids | None = None, **extra: Any
    ) -> Published:
        return await self._run(self._notification(message, level, users, extra))

    async def review_updated(
        self, review_id: str, changes: Mapping[str, Any] | None = None, users: Ids | None = None
    ) -> Published:
        return await self._run(self._review_updated(review_id, changes, users))

    async def file_status(
        self, file_id: str, user_id: str | int, status: str, progress: float | None = None
    ) -> Published:
        return await self._run(self._file_status(file_id, user_id, status, progress))

    async def stats(self) -> Stats:
        return await self._run(self._stats())

    async def connections(self, user_id: str | int | None = None) -> list[ConnectionInfo]:
        return await self._run(self._connections(user_id))

    async def disconnect(self, connection_id: str) -> None:
        await self._run(self._disconnect(connection_id))

    async def deactivate_user(self, user_id: str | int) -> None:
        await self._run(self._user_action(user_id, "deactivate"))

    async def activate_user(self, user_id: str | int) -> None:
        await self._run(self._user_action(user_id, "activate"))

    async def health(self) -> dict[str, Any]:
        return await self._run(self._health())

    async def metrics(self) -> str:
        return await self._run(self._metrics())
