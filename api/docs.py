"""The API's own documentation, served offline: Swagger UI and ReDoc from a pinned package
(`fastapi-offline`'s static files, no CDN), and the OpenAPI document's security schemes so
"Try it out" can send a user's token.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from api.auth import SIGNATURE_HEADER, TIMESTAMP_HEADER

ASSETS = "/docs/assets"

SECURITY_SCHEMES: dict[str, Any] = {
    "supabaseJwt": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "A user's Supabase access token (HS256, audience `authenticated`): the"
        " caller sees only their own rows.",
    },
    "hmacSignature": {
        "type": "apiKey",
        "in": "header",
        "name": SIGNATURE_HEADER,
        "description": f"Servers (edge functions, crons): `v1=<hex>`, the HMAC-SHA256 of"
        f' "{{ts}}.{{METHOD}}.{{path}}.{{body}}" with MYYC_HMAC_SECRET, the timestamp in'
        f" `{TIMESTAMP_HEADER}` (within 5 minutes; a signature is accepted once).",
    },
}
#: Operations anyone may call.
PUBLIC = frozenset({"/health", "/ready"})


def install(app: FastAPI) -> None:
    """Serve /docs and /redoc offline and put the security schemes in /openapi.json."""
    static = resources.files("fastapi_offline") / "static"
    app.mount(ASSETS, StaticFiles(directory=str(static)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json", title=f"{app.title} — API",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon.png",
        )  # fmt: skip

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url="/openapi.json", title=f"{app.title} — API",
            redoc_js_url=f"{ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{ASSETS}/favicon.png", with_google_fonts=False,
        )  # fmt: skip

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = get_openapi(title=app.title, version=app.version, summary=app.summary,
                               routes=app.routes)  # fmt: skip
            spec.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
            either: list[dict[str, list[str]]] = [{"supabaseJwt": []}, {"hmacSignature": []}]
            for path, operations in spec.get("paths", {}).items():
                if path in PUBLIC:
                    continue
                for operation in operations.values():
                    operation["security"] = either
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
