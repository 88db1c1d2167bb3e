"""/docs served with Swagger UI's files from the fastapi-offline package, not a CDN:
the offline installs the README promises get a working page.

Not swagger-ui-bundle: its Swagger UI 4.15 cannot read OpenAPI 3.1 (what FastAPI emits) and
shows "Unable to render this definition" (tests/service/test_console.py renders /docs in
a real browser). fastapi-offline ships Swagger UI 5."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = "/docs-assets"


def install(app: FastAPI) -> None:
    """Call with an app built with ``docs_url=None`` (FastAPI's own /docs uses a CDN)."""
    import fastapi_offline

    assets = Path(fastapi_offline.__file__).with_name("static")
    app.mount(ASSETS, StaticFiles(directory=assets), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} API",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon.png",
        )
