"""The API docs served from the package: Swagger UI at ``/docs`` and ReDoc at ``/redoc`` with
their assets from the ``fastapi-offline`` package (no request leaves the server), and an
OpenAPI document fit for them: request bodies for the routes that read their form or JSON
themselves (the score routes), and descriptions without Sphinx cross-reference roles."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_URL = "/static-docs"
FAVICON = "/static/favicon.svg"
#: the docs pages may load nothing from elsewhere (ReDoc's footer logo would come from its CDN)
CSP = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self' 'unsafe-inline' blob:; worker-src 'self' blob:; font-src 'self' data:"
)
_ROLE = re.compile(r":(?:py:)?[a-z]+:`~?([^`<]*?)(?:\s*<[^>]*>)?`")


def assets_dir() -> Path:
    """The folder with swagger-ui-bundle.js, swagger-ui.css and redoc.standalone.js."""
    import fastapi_offline

    return Path(fastapi_offline.__file__).with_name("static")


def clean(text: str) -> str:
    """``:func:`~a.b.c``` → ``c``; ``:class:`Name``` → ``Name``; ``x``` `` → ``x``."""
    text = _ROLE.sub(lambda m: m.group(1).rsplit(".", 1)[-1] if "." in m.group(1) else m.group(1), text)
    return re.sub(r"``([^`]+)``", r"`\1`", text)


def _image_part(many: bool) -> dict[str, Any]:
    item = {"type": "string", "format": "binary"}
    return {"type": "array", "items": item, "maxItems": 64} if many else item


def _score_body(many: bool) -> dict[str, Any]:
    files = "files" if many else "file"
    json_schema: dict[str, Any] = (
        {
            "type": "object",
            "properties": {
                "image_ids": {"type": "array", "items": {"type": "integer"}},
                "urls": {"type": "array", "items": {"type": "string"}},
            },
        }
        if many
        else {"type": "object", "properties": {"image_id": {"type": "integer"}, "url": {"type": "string"}}}
    )
    return {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {"type": "object", "properties": {files: _image_part(many)}, "required": [files]}
            },
            "application/json": {"schema": json_schema},
        },
    }


#: request bodies of routes that parse their own body (the score routes take a file or JSON)
BODIES = {("/api/v1/score", "post"): _score_body(False), ("/api/v1/score/batch", "post"): _score_body(True)}


def _walk(node: Any) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "description" and isinstance(value, str):
                node[key] = clean(value)
            else:
                _walk(value)
    elif isinstance(node, list):
        for value in node:
            _walk(value)


def _local_only(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = CSP
    return page


def install_docs(app: FastAPI) -> None:
    """Serve ``/docs`` and ``/redoc`` offline and tidy the OpenAPI document (built once)."""
    app.mount(ASSETS_URL, StaticFiles(directory=assets_dir()), name="static-docs")
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            for (path, method), body in BODIES.items():
                op = schema.get("paths", {}).get(path, {}).get(method)
                if op is not None and "requestBody" not in op:
                    op["requestBody"] = body
            _walk(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.get("/docs", include_in_schema=False)
    def swagger() -> HTMLResponse:
        return _local_only(
            get_swagger_ui_html(
                openapi_url="/openapi.json",
                title="doohable API",
                swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
                swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
                swagger_favicon_url=FAVICON,
                oauth2_redirect_url="/docs/oauth2-redirect",
                swagger_ui_parameters={"validatorUrl": None},  # no badge fetched from validator.swagger.io
            )
        )

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    def swagger_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return _local_only(
            get_redoc_html(
                openapi_url="/openapi.json",
                title="doohable API",
                redoc_js_url=f"{ASSETS_URL}/redoc.standalone.js",
                redoc_favicon_url=FAVICON,
                with_google_fonts=False,
            )
        )
