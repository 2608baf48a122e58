"""WSGI plumbing for the embedded Hub: request bodies, responses, errors and byte ranges.

Kept apart from the route handlers so they read as Hub behaviour, not protocol detail.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import parse_qs

from pipeline.rehearsal.hub.model import HubRequestError, RepoRef

if TYPE_CHECKING:
    from pipeline.rehearsal.hub.auth import Grant

# Set by our own request handler: `wsgi.input` is then the raw socket stream, so a chunked
# body still needs decoding (wsgiref passes it through as sent).
RAW_INPUT_KEY = "pipeline.rehearsal.hub.raw_input"
# Set by an app that leaves the request body unread: the connection cannot carry another request.
CLOSE_CONNECTION_KEY = "pipeline.rehearsal.hub.close_connection"
READ_CHUNK = 1024 * 1024
# JSON bodies are small; anything bigger is a client error, not something to buffer.
MAX_JSON_BODY = 64 * 1024 * 1024


class RangeNotSatisfiable(Exception):
    """The Range header asks for bytes the file does not have."""


class RequestBody:
    """The request body as a byte stream, whether it came sized, chunked, or to end of input."""

    def __init__(self, environ: Mapping[str, Any]) -> None:
        self._stream: IO[bytes] = environ["wsgi.input"]
        chunked = environ.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked"
        length = (environ.get("CONTENT_LENGTH") or "").strip()
        self._chunked = chunked and bool(environ.get(RAW_INPUT_KEY))
        # Bytes left to read; None reads to the end of input (chunked, or already de-chunked).
        self._remaining: int | None
        if self._chunked or ((chunked or environ.get("wsgi.input_terminated")) and not length.isdigit()):
            self._remaining = None
        else:
            self._remaining = int(length) if length.isdigit() else 0
        self._chunk_left = 0
        self._done = False

    def iter_chunks(self, size: int = READ_CHUNK) -> Iterator[bytes]:
        """Yield the body in pieces of at most `size` bytes."""
        while True:
            piece = self._read_some(size)
            if not piece:
                return
            yield piece

    def read_all(self, limit: int = MAX_JSON_BODY) -> bytes:
        data = bytearray()
        for piece in self.iter_chunks():
            data += piece
            if len(data) > limit:
                raise PayloadTooLarge(f"Request body larger than {limit} bytes")
        return bytes(data)

    def json(self) -> Any:
        try:
            return json.loads(self.read_all() or b"null")
        except ValueError:
            raise HubRequestError("Request body is not valid JSON") from None

    def json_object(self) -> dict[str, Any]:
        """The body as a JSON object; an empty body is an empty object."""
        payload = self.json()
        if payload is None:
            return {}
        if not isinstance(payload, dict):
            raise HubRequestError("Request body must be a JSON object")
        return payload

    def form(self) -> dict[str, list[str]]:
        return parse_qs(self.read_all().decode("utf-8", "replace"), keep_blank_values=True)

    def iter_lines(self) -> Iterator[bytes]:
        """Yield the body line by line (for ndjson), without holding all of it."""
        buffer = bytearray()
        for piece in self.iter_chunks():
            scan_from = len(buffer)  # earlier bytes hold no newline: do not rescan a long line
            buffer += piece
            while (newline := buffer.find(b"\n", scan_from)) >= 0:
                yield bytes(buffer[:newline])
                del buffer[: newline + 1]
                scan_from = 0
        if buffer:
            yield bytes(buffer)

    def drain(self) -> None:
        """Read what the handler left, so the client never sees a reset before our answer."""
        for _ in self.iter_chunks():
            pass

    def _read_some(self, size: int) -> bytes:
        if self._done:
            return b""
        if self._chunked:
            return self._read_chunked(size)
        want = size if self._remaining is None else min(size, self._remaining)
        piece = self._stream.read(want) if want > 0 else b""
        if self._remaining is not None:
            self._remaining -= len(piece)
        if not piece or self._remaining == 0:
            self._done = True
        return piece

    def _read_chunked(self, size: int) -> bytes:
        if self._chunk_left == 0:
            line = self._stream.readline(1024)
            try:
                self._chunk_left = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                self._done = True
                raise HubRequestError("Malformed chunked request body") from None
            if self._chunk_left == 0:
                while self._stream.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                self._done = True
                return b""
        piece = self._stream.read(min(size, self._chunk_left))
        self._chunk_left -= len(piece)
        if not piece:
            self._done = True
        elif self._chunk_left == 0:
            self._stream.readline(1024)  # the CRLF closing each chunk
        return piece


class PayloadTooLarge(HubRequestError):
    status = 413


@dataclass
class Request:
    """One request as the handlers see it: path parameters already unquoted."""

    method: str
    params: dict[str, str]
    query: dict[str, list[str]]
    body: RequestBody
    environ: Mapping[str, Any]
    grant: Grant | None = None  # the caller's token grant, once access was checked

    @property
    def base_url(self) -> str:
        """The server's own address as the client reached it, for URLs we hand back."""
        host = self.environ.get("HTTP_HOST") or (f"{self.environ['SERVER_NAME']}:{self.environ['SERVER_PORT']}")
        return f"{self.environ.get('wsgi.url_scheme', 'http')}://{host}"

    def header(self, name: str) -> str | None:
        return self.environ.get("HTTP_" + name.upper().replace("-", "_"))

    def flag(self, name: str) -> bool:
        """Whether a query flag such as `recursive=1` or `expand=True` is on."""
        values = self.query.get(name) or [""]
        return values[-1].lower() in ("1", "true")

    def repo(self) -> RepoRef:
        plural = self.params.get("plural") or "models"
        return RepoRef(plural[:-1], self.params["namespace"], self.params["name"])


@dataclass
class Response:
    """A status, headers and a body iterable (streamed as is)."""

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: Iterable[bytes] = ()

    @property
    def status_line(self) -> str:
        try:
            phrase = HTTPStatus(self.status).phrase
        except ValueError:  # a status with no standard name, such as an injected 599
            phrase = "Error"
        return f"{self.status} {phrase}"


def json_response(
    status: int,
    payload: Any,
    headers: Iterable[tuple[str, str]] = (),
    content_type: str = "application/json",
) -> Response:
    data = json.dumps(payload).encode()
    return Response(
        status,
        [("Content-Type", content_type), ("Content-Length", str(len(data))), *headers],
        [data],
    )


def error_response(
    status: int,
    message: str,
    code: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    extra: Mapping[str, Any] | None = None,
) -> Response:
    """The Hub's error shape: JSON `{error}` plus `X-Error-Code` / `X-Error-Message` headers."""
    error_headers = [("X-Error-Message", _header_safe(message)), *headers]
    if code is not None:
        error_headers.append(("X-Error-Code", code))
    return json_response(status, {"error": message, **(extra or {})}, error_headers)


def _header_safe(text: str) -> str:
    # Header values must be latin-1 and one line; messages can quote user-given names.
    return text.encode("ascii", "replace").decode().replace("\r", " ").replace("\n", " ")[:1000]


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive byte span a single-range `Range` header asks for.

    None means "send the whole file": no header, several ranges, or a header we cannot parse
    (RFC 9110 §14.2 lets a server ignore those). Raises RangeNotSatisfiable when the span starts
    past the end.
    """
    if not header or not header.strip().lower().startswith("bytes="):
        return None
    spec = header.strip()[len("bytes=") :].strip()
    if "," in spec or "-" not in spec:
        return None
    first, last = (part.strip() for part in spec.split("-", 1))
    if not first:
        if not last.isdigit():
            return None
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable
        return max(0, size - suffix), size - 1
    if not first.isdigit() or (last and not last.isdigit()):
        return None
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= size:
        raise RangeNotSatisfiable
    return start, min(int(last), size - 1) if last else size - 1
