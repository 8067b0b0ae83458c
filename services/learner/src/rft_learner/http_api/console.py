"""The web console's files, served under /console/ by the same process as the API. The
console is a client of the /v1 paths only: these routes hand out its built static files
(`make install` builds console/ with Vite) and nothing else, so they need no key."""

from __future__ import annotations

import pathlib

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

PREFIX = "/console"
# The built console has no inline script or style element; uPlot and Preact set styles
# through the CSSOM, which style-src does not govern.
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data: blob:; style-src 'self';"
    " connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}
NOT_BUILT = """<!doctype html><title>RFT console not built</title>
<h1>The RFT console is not built</h1>
<p>Run <code>make install</code> (it builds <code>console/</code> with npm), or start the learner with
<code>--console-dir</code> naming a built console. The API itself is at <a href="/docs">/docs</a>.</p>"""


def default_directory() -> pathlib.Path:
    """console/dist of the source tree this package is installed from (editable installs)."""
    return pathlib.Path(__file__).resolve().parents[5] / "console" / "dist"


def is_console_path(path: str) -> bool:
    return path == "/" or path == PREFIX or path.startswith(PREFIX + "/")


class _ConsoleFiles(StaticFiles):
    async def get_response(self, path, scope):
        response = await super().get_response(path, scope)
        response.headers.update(SECURITY_HEADERS)
        if path.startswith("assets/"):  # content-hashed names: cache them for good
            response.headers["cache-control"] = "public, max-age=31536000, immutable"
        else:
            response.headers["cache-control"] = "no-cache"
        return response


def mount(app: FastAPI, directory: str) -> None:
    """Serve the console from `directory` ("" = default_directory(), "none" = no console)."""
    if directory == "none":
        return
    root = pathlib.Path(directory) if directory else default_directory()

    @app.get("/", include_in_schema=False)
    async def home() -> RedirectResponse:
        return RedirectResponse(PREFIX + "/")

    if (root / "index.html").is_file():
        app.mount(PREFIX, _ConsoleFiles(directory=root, html=True), name="console")
        return

    @app.get(PREFIX + "/{rest:path}", include_in_schema=False)
    async def not_built(rest: str = "") -> HTMLResponse:
        return HTMLResponse(NOT_BUILT, status_code=503, headers=SECURITY_HEADERS)
