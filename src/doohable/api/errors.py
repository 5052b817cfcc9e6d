"""Map the voting service's errors to HTTP answers ``{"detail": reason}``, and infrastructure
faults (database down or locked, blob store unreachable, disk full) to 503 with ``Retry-After``."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request, status
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, DisconnectionError

from doohable.api.retry import mark_dropped
from doohable.store.faults import dropped_connection, unavailable_reason
from doohable.voting import ConflictError, NotFoundError, VotingError

log = logging.getLogger(__name__)
RETRY_AFTER_S = 5

_STATUS: list[tuple[type[VotingError], int]] = [
    (NotFoundError, status.HTTP_404_NOT_FOUND),
    (ConflictError, status.HTTP_409_CONFLICT),
    (VotingError, status.HTTP_400_BAD_REQUEST),
]


def install_error_handlers(app: FastAPI) -> None:
    """Register one handler per service error class (most specific first), and the 503 one."""

    async def voting_error(_request: Request, exc: Exception) -> JSONResponse:
        code = next(c for cls, c in _STATUS if isinstance(exc, cls))
        return JSONResponse({"detail": str(exc)}, status_code=code)

    for cls, _code in _STATUS:
        app.add_exception_handler(cls, voting_error)

    async def unavailable(request: Request, exc: Exception) -> JSONResponse:
        reason = unavailable_reason(exc)
        if reason is None:
            raise exc
        if dropped_connection(exc) and mark_dropped(request):
            log.info("database connection lost on %s %s: %s", request.method, request.url.path, reason)
        else:
            log.warning("503 on %s %s: %s", request.method, request.url.path, reason)
        return JSONResponse(
            {"detail": reason}, status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )

    for fault in (DBAPIError, DisconnectionError, OSError):
        app.add_exception_handler(fault, unavailable)
