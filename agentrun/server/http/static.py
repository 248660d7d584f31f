"""The web console's files, served at `/` of the HTTP port.

The console is a single-page app whose built assets are checked in under
`agentrun/server/console/static/` (see docs/console.md). `/` and every path that names no file
and has no extension (the app's own routes, e.g. `/executions/123`) get `index.html`; other
files are served with their content type. Files under `assets/` carry a content hash in their
names, so they are cached for a year; everything else is revalidated by ETag on each load.
Text files (scripts, styles, HTML, JSON, SVG) go gzip-compressed to clients that accept it,
compressed once and kept.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import mimetypes
from pathlib import Path
from typing import Any

CONSOLE_DIR = Path(__file__).resolve().parent.parent / "console" / "static"
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"

# Types the console uses that some systems' mime tables lack or get wrong.
_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".svg": "image/svg+xml",
    ".wasm": "application/wasm",
    ".woff2": "font/woff2",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
}

_COMPRESSIBLE = (b"text/", b"application/json", b"image/svg+xml", b"application/wasm")
_MIN_COMPRESSED = 1024

NOT_BUILT = (
    b"The agentrun console is not built into this installation "
    b"(agentrun/server/console/static/index.html is missing).\n"
    b"The API is served here: POST /agentrun.v1.<Service>/<Method> with JSON.\n"
)

Send = Any
Receive = Any


class StaticFiles:
    """An ASGI app serving one directory, with index.html as the fallback for app routes."""

    def __init__(self, directory: Path = CONSOLE_DIR) -> None:
        self.directory = directory.resolve()
        # path -> (mtime_ns, size, body, etag): files are small and few; read each once.
        self._cache: dict[Path, tuple[int, int, bytes, str]] = {}
        # etag -> gzip of that body
        self._gzipped: dict[str, bytes] = {}

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["method"] not in ("GET", "HEAD"):
            await _respond(send, 405, b"method not allowed\n", [(b"allow", b"GET, HEAD")])
            return
        path = self._find(scope["path"])
        if path is None:
            if (self.directory / "index.html").is_file():
                await _respond(send, 404, b"not found\n")
            else:
                await _respond(send, 404, NOT_BUILT)
            return
        body, etag = await self._read(path)
        cache = IMMUTABLE if path.parent.name == "assets" else REVALIDATE
        content_type = _content_type(path).encode()
        compressible = content_type.startswith(_COMPRESSIBLE) and len(body) >= _MIN_COMPRESSED
        headers = [
            (b"content-type", content_type),
            (b"cache-control", cache.encode()),
            (b"x-content-type-options", b"nosniff"),
        ]
        if compressible:
            headers.append((b"vary", b"accept-encoding"))
            if "gzip" in _header(scope, b"accept-encoding"):
                body = await self._gzip(body, etag)
                etag = etag[:-1] + '-gzip"'  # another representation, another tag
                headers.append((b"content-encoding", b"gzip"))
        headers.append((b"etag", etag.encode()))
        if etag in _header(scope, b"if-none-match"):
            await _respond(send, 304, b"", headers)
            return
        await _respond(send, 200, b"" if scope["method"] == "HEAD" else body, headers, len(body))

    def _find(self, url_path: str) -> Path | None:
        relative = url_path.lstrip("/")
        if relative and ".." not in relative.split("/"):
            candidate = (self.directory / relative).resolve()
            if candidate.is_relative_to(self.directory) and candidate.is_file():
                return candidate
        if "." in relative.rsplit("/", 1)[-1]:
            return None  # a missing file, not an app route
        index = self.directory / "index.html"
        return index if index.is_file() else None

    async def _read(self, path: Path) -> tuple[bytes, str]:
        stat = path.stat()
        cached = self._cache.get(path)
        if cached is not None and cached[:2] == (stat.st_mtime_ns, stat.st_size):
            return cached[2], cached[3]
        body = await asyncio.to_thread(path.read_bytes)
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        self._cache[path] = (stat.st_mtime_ns, stat.st_size, body, etag)
        return body, etag

    async def _gzip(self, body: bytes, etag: str) -> bytes:
        packed = self._gzipped.get(etag)
        if packed is None:
            packed = await asyncio.to_thread(gzip.compress, body, 6, mtime=0)
            self._gzipped[etag] = packed
        return packed


def _content_type(path: Path) -> str:
    known = _TYPES.get(path.suffix.lower())
    if known:
        return known
    guessed, _ = mimetypes.guess_type(path.name)
    return guessed or "application/octet-stream"


def _header(scope: dict[str, Any], name: bytes) -> str:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return ""


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    headers: list[tuple[bytes, bytes]] | None = None,
    length: int | None = None,
) -> None:
    headers = list(headers or [(b"content-type", b"text/plain; charset=utf-8")])
    headers.append((b"content-length", str(len(body) if length is None else length).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
