"""The process state that one app or one command works with, built once from its settings.

:class:`Services` holds the settings, the database engine and session factory, the blob
store, the scorer and the bearer-token cache. ``create_app`` builds one and keeps it on
``app.state.services`` (the API's dependencies reach it from there); the CLI builds one per
command with :meth:`Services.from_env`. Two apps in one process built from different settings
share none of it.

Everything is opened on first use, not when the object is built: an app can be created while
its database or blob store is down, and a command touches only what it needs. The first use
of :attr:`engine` creates or upgrades the schema (blocking).

What stays process-wide, keyed by what it is made from: the connection pool of each database
URL (:func:`doohable.store.db.get_engine`; one pool per database, however many apps use it),
the loaded ONNX models (:func:`doohable.batch.cached_scorer`, keyed by model path and
threads), and the voting service's live ratings and SQLite writer lock (per database: the
API, the pages and Slack in one process must see the same votes).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from doohable.config import Settings, get_settings
from doohable.store.users import TokenCache

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session, sessionmaker

    from doohable.batch import ScorerLike
    from doohable.store.blobs import BlobStore

#: what loading a scorer raises when no model can be loaded (missing file, unknown name)
NO_MODEL_ERRORS = (FileNotFoundError, ValueError)


class Services:
    """Settings, database, blob store, scorer and token cache of one app or command."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        #: valid bearer tokens → their user, for a few seconds (see :class:`TokenCache`)
        self.tokens = TokenCache()
        self._lock = threading.Lock()
        self._sessions: sessionmaker[Session] | None = None
        self._blobs: BlobStore | None = None
        self._scorer: ScorerLike | None = None

    @classmethod
    def from_env(cls) -> Services:
        """The services of the environment's settings (``DOOHABLE_*``): what a command uses."""
        return cls(get_settings())

    @property
    def database_url(self) -> str:
        return self.settings.resolved_database_url

    @property
    def engine(self) -> Engine:
        """The database's engine, its schema created or upgraded on first use (blocking)."""
        from doohable.store.db import get_engine

        return get_engine(self.database_url)

    @property
    def sessions(self) -> sessionmaker[Session]:
        """The session factory (no expiry on commit); blocking the first time, like :attr:`engine`."""
        factory = self._sessions
        if factory is None:
            from sqlalchemy.orm import sessionmaker

            with self._lock:
                factory = self._sessions
                if factory is None:
                    factory = self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        return factory

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One session and transaction: committed on success, rolled back on error."""
        with self.sessions.begin() as session:
            yield session

    @property
    def sessions_ready(self) -> bool:
        """True once :attr:`sessions` was built (later uses do no I/O)."""
        return self._sessions is not None

    @property
    def blobs(self) -> BlobStore:
        """The blob store of the settings' blob URL (a local folder or S3), opened once."""
        store = self._blobs
        if store is None:
            from doohable.store.blobs import open_blobs

            with self._lock:
                store = self._blobs
                if store is None:
                    store = self._blobs = open_blobs(self.settings.resolved_blob_url)
        return store

    def scorer(self) -> ScorerLike:
        """The settings' scorer, loaded on first use; raises one of :data:`NO_MODEL_ERRORS`
        when no model can be loaded (tried again on the next call)."""
        scorer = self._scorer
        if scorer is None:
            from doohable.batch import cached_scorer

            scorer = self._scorer = cached_scorer(self.settings.model, self.settings.threads)
        return scorer

    def forget_scorer(self, model: str) -> None:
        """Load ``model`` again on its next use, here and process-wide (its file was replaced)."""
        from doohable.batch import cached_scorer
        from doohable.model.runtime import resolve_model_path

        cached_scorer.cache_clear()
        with self._lock:
            if self.settings.model is not None and _same_file(self.settings.model, model, resolve_model_path):
                self._scorer = None

    def warm_scorer(self) -> str | None:
        """Load the scorer and its lazily loaded parts; the reason when there is no model."""
        try:
            warm = getattr(self.scorer(), "warm", None)  # a combined scorer's lazily loaded parts
            if warm is not None:
                warm()
        except NO_MODEL_ERRORS as e:
            return str(e)
        return None


def _same_file(a: str, b: str, resolve: Any) -> bool:
    """Whether two model names or paths are the same file (False when either does not resolve)."""
    try:
        return bool(resolve(a).resolve() == resolve(b).resolve())
    except FileNotFoundError:
        return False
