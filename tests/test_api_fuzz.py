"""API fuzzing: schemathesis generates requests from the app's own OpenAPI schema (valid and
invalid bodies, parameters and uploads) and sends them with an admin's bearer token, so
every route's code runs past authentication. No request may get a 5xx.

Bounded: a fixed number of examples per operation, derandomized (reproducible in CI). DNS is
stubbed out so that generated URLs are refused at once instead of waiting on a resolver."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from doohable.api.app import create_app
from doohable.config import Settings
from doohable.store.blobs import open_blobs
from doohable.store.db import get_engine, session_scope
from doohable.store.users import add_user
from scoring_fixtures import brightness_model
from voting_support import add_images

pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("DOOHABLE_API_FUZZ_EXAMPLES", "30"))  # per operation; more for a long run
RANDOM = bool(os.environ.get("DOOHABLE_API_FUZZ_RANDOM"))  # a new seed each run instead of a fixed one


def _no_dns(host: Any, *args: Any, **kw: Any) -> Any:
    raise socket.gaierror(socket.EAI_NONAME, f"no DNS in this test ({host})")


# The schema (and the app it is sent to) must exist when pytest collects the module; the app
# gets a private store in a temporary folder, filled by the ``admin_headers`` fixture before any call.
ROOT = Path(tempfile.mkdtemp(prefix="doohable-apifuzz-"))
SETTINGS = Settings(
    home=ROOT / "home",
    database_url=f"sqlite:///{ROOT / 'fuzz.db'}",
    blob_url=f"file://{ROOT / 'blobs'}",
    model=str(ROOT / "brightness.onnx"),
    threads=1,
)
APP = create_app(SETTINGS)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@pytest.fixture(scope="module")
def admin_headers() -> Iterator[dict[str, Any]]:
    brightness_model(ROOT / "brightness.onnx")
    with session_scope(get_engine(SETTINGS.resolved_database_url)) as session:
        add_images(session, 6, blobs=open_blobs(SETTINGS.resolved_blob_url))
        _, token = add_user(session, "fuzz-admin", "admin")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket, "getaddrinfo", _no_dns)
        yield {"headers": {"Authorization": f"Bearer {token}"}}
    shutil.rmtree(ROOT, ignore_errors=True)


@schema.parametrize()
@settings(
    max_examples=EXAMPLES, deadline=None, derandomize=not RANDOM, suppress_health_check=list(HealthCheck)
)
def test_no_request_gets_a_5xx(case: Any, admin_headers: dict[str, Any]) -> None:
    response = case.call(headers=admin_headers["headers"])
    case.validate_response(response, checks=(not_a_server_error,))
