"""The embedded Hub's "CDN": a second origin that serves LFS bytes to signed URLs only.

On the Hub, `resolve` answers an LFS file with a 302 to a storage host whose presigned URL is the
only credential; the client must not (and huggingface_hub does not) send its Authorization header
there (`file_download.py` drops it for another host, httpx drops it on a cross-origin redirect).
This origin refuses any request that carries one, so a client that would leak the token fails here.
Faults, pacing and byte counts are the Hub app's own.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable, Iterable
from typing import Any

from pipeline.rehearsal.hub.app import HubApp
from pipeline.rehearsal.hub.wsgi import CLOSE_CONNECTION_KEY, Response, error_response

_BLOB = re.compile(r"/blobs/(?P<sha256>[0-9a-f]{64})")
ROUTE_NAME = "cdn"


class CdnApp:
    """WSGI app for the CDN origin of one Hub app."""

    def __init__(self, hub: HubApp) -> None:
        self.hub = hub

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        method = environ["REQUEST_METHOD"].upper()
        self.hub.stats.record_request(method, ROUTE_NAME)
        response = self._respond(method, environ)
        start_response(response.status_line, response.headers)
        if method == "HEAD":
            return []
        return self.hub.injector.pace(response.body)

    def _respond(self, method: str, environ: dict[str, Any]) -> Response:
        match = _BLOB.fullmatch(str(environ.get("PATH_INFO", "")))
        if method not in ("GET", "HEAD"):
            environ[CLOSE_CONNECTION_KEY] = True  # its body, if any, is never read
        if method not in ("GET", "HEAD") or match is None:
            return error_response(404, "Not found")
        if environ.get("HTTP_AUTHORIZATION"):
            return error_response(400, "A signed URL takes no Authorization header: only one auth mechanism is allowed")
        sha256 = match["sha256"]
        query = dict(part.split("=", 1) for part in str(environ.get("QUERY_STRING", "")).split("&") if "=" in part)
        if not hmac.compare_digest(query.get("signature", ""), self.hub.blob_signature(sha256)):
            return error_response(403, "Request has expired or the signature does not match")
        size = self.hub.storage.blob_size(sha256)
        if size is None:
            return error_response(404, "No such blob")
        return self.hub.bytes_response(method, environ.get("HTTP_RANGE"), sha256, size, [("ETag", f'"{sha256}"')])
