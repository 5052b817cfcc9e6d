"""``GET /userscript/doohable.user.js``: the browser userscript with this server's address
filled in. The route it sends images to is :mod:`doohable.api.routers.userscript`."""

from __future__ import annotations

from importlib import resources
from urllib.parse import urlsplit

from fastapi import APIRouter, Request, Response

router = APIRouter(prefix="/userscript", tags=["userscript"], include_in_schema=False)


def userscript_source(server: str) -> str:
    """The packaged userscript with ``server`` (e.g. ``https://doohable.example.com``) filled in."""
    text = resources.files("doohable").joinpath("userscript/doohable.user.js").read_text(encoding="utf-8")
    host = urlsplit(server).hostname or "localhost"
    return text.replace("__DOOHABLE_SERVER__", server.rstrip("/")).replace("__DOOHABLE_HOST__", host)


@router.get("/doohable.user.js")
def get_userscript(request: Request) -> Response:
    """The userscript, for Tampermonkey / Greasemonkey / Violentmonkey."""
    server = str(request.base_url).rstrip("/")
    return Response(userscript_source(server), media_type="application/javascript; charset=utf-8")
