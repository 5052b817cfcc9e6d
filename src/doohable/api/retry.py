"""Idempotent reads (GET, HEAD) retried once when their database connection drops mid-request.

A connection killed under a request (the database restarted, ``pg_terminate_backend``, a
proxy's idle timeout) fails that request with a disconnect error, which the error handler
answers 503 (:mod:`doohable.api.errors`). For a read that is one retry away from an answer:
the pool has thrown the dead connection away and checks the next one before use
(``pool_pre_ping``), so :class:`ReadRetryMiddleware` runs the request once more on a fresh
connection and sends its answer instead. A second drop, or a database still down, gives the
503 with ``Retry-After``. Writes are never replayed here: their clients retry with the
answer in hand (a vote is idempotent by its pair token)."""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)
RETRIED_METHODS = frozenset({"GET", "HEAD"})
#: the scope key of a request's :class:`Attempt` (set by the middleware, read by the handler)
SCOPE_KEY = "doohable.read_attempt"


class Attempt:
    """One run of a request: whether its database connection dropped (set by the handler)."""

    __slots__ = ("dropped",)

    def __init__(self) -> None:
        self.dropped = False


def mark_dropped(request: Request) -> bool:
    """Record that ``request`` lost its database connection; True when it will be retried
    (the 503 being built is then not sent)."""
    attempt = request.scope.get(SCOPE_KEY)
    if isinstance(attempt, Attempt):
        attempt.dropped = True
        return True
    return False


class ReadRetryMiddleware:
    """Run a GET or HEAD a second time (once) when its first run lost its database connection.

    The first run's answer is held back only when it is that 503; every other answer goes
    out as it comes (streams included). The request's body messages, if any, are replayed."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in RETRIED_METHODS:
            await self.app(scope, receive, send)
            return
        attempt, received = Attempt(), []
        held = False

        async def recording_receive() -> Message:
            message = await receive()
            received.append(message)
            return message

        async def holding_send(message: Message) -> None:
            nonlocal held
            if message["type"] == "http.response.start":
                held = attempt.dropped and message["status"] == 503
            if not held:
                await send(message)

        await self.app({**scope, SCOPE_KEY: attempt}, recording_receive, holding_send)
        if not held:
            return
        log.warning("retrying %s %s on a fresh database connection", scope["method"], scope["path"])

        async def replaying_receive() -> Message:
            return received.pop(0) if received else await receive()

        await self.app(scope, replaying_receive, send)
