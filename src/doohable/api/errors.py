"""Map the voting service's errors to HTTP answers ``{"detail": reason}``."""

from __future__ import annotations

from fastapi import FastAPI, Request, status
from fastapi.responses import JSONResponse

from doohable.voting import ConflictError, NotFoundError, VotingError

_STATUS: list[tuple[type[VotingError], int]] = [
    (NotFoundError, status.HTTP_404_NOT_FOUND),
    (ConflictError, status.HTTP_409_CONFLICT),
    (VotingError, status.HTTP_400_BAD_REQUEST),
]


def install_error_handlers(app: FastAPI) -> None:
    """Register one handler per service error class (most specific first)."""

    async def voting_error(_request: Request, exc: Exception) -> JSONResponse:
        code = next(c for cls, c in _STATUS if isinstance(exc, cls))
        return JSONResponse({"detail": str(exc)}, status_code=code)

    for cls, _code in _STATUS:
        app.add_exception_handler(cls, voting_error)
