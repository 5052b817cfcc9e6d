"""Infrastructure faults (database down, locked or read-only, blob store unreachable, disk full)
told apart from bugs, with a clear reason: the API answers them 503 with ``Retry-After``, the
CLI prints the reason and exits with status 3, never a traceback."""

from __future__ import annotations

import errno

from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError

from doohable.store.blobs import BlobStoreError
from doohable.store.db import SchemaError


def dropped_connection(exc: BaseException) -> bool:
    """True when ``exc`` says the database connection in use was lost (killed, server
    restarted): SQLAlchemy has then invalidated it, and a new one may well work."""
    return isinstance(exc, DisconnectionError) or (isinstance(exc, DBAPIError) and exc.connection_invalidated)


def unavailable_reason(exc: BaseException) -> str | None:
    """A clear reason when ``exc`` is an infrastructure fault worth a retry (or a schema newer
    than the code), else None."""
    if isinstance(exc, SchemaError):
        return str(exc)
    if isinstance(exc, (OperationalError, InterfaceError)) or dropped_connection(exc):
        lines = str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__]
        orig = lines[0][:200]
        if "readonly" in orig or "read-only" in orig:
            return f"the database is read-only ({orig}); nothing was stored"
        if "unable to open database file" in orig:
            return f"the database file cannot be opened: missing, or its folder is read-only ({orig})"
        if "locked" in orig:
            return f"the database is locked by another process ({orig}); nothing was stored"
        return f"the database is unavailable ({orig}); nothing was stored"
    if isinstance(exc, BlobStoreError):
        return f"{exc.strerror}; nothing was stored"
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "disk full: no space left on the server; nothing was stored"
    return None
