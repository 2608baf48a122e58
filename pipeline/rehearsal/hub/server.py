"""Run the embedded Hub on a threaded wsgiref server: `HubServer` in a thread, `serve` in front.

`HubServer` is for tests and in-process rehearsals; `serve` is what the CLI runs. One server
process per storage root. Bind to loopback: even in strict mode its tokens are rehearsal tokens.
"""

from __future__ import annotations

import http.client
import itertools
import logging
import socket
import socketserver
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, cast
from wsgiref.simple_server import ServerHandler, WSGIRequestHandler, WSGIServer

from pipeline.rehearsal.hub.app import HubApp
from pipeline.rehearsal.hub.auth import AccessPolicy
from pipeline.rehearsal.hub.cdn import CdnApp
from pipeline.rehearsal.hub.faults import FaultPlan
from pipeline.rehearsal.hub.oidc import TrustedPublishers
from pipeline.rehearsal.hub.stats import ServerStats
from pipeline.rehearsal.hub.storage import HubStorage
from pipeline.rehearsal.hub.wsgi import CLOSE_CONNECTION_KEY, RAW_INPUT_KEY

if TYPE_CHECKING:
    from typing_extensions import Self

logger = logging.getLogger(__name__)
# Tree entries per page for `hub serve` (an assumption: the Hub's own page size is not documented).
TREE_PAGE_SIZE = 1000
# An idle kept-alive connection is closed after this long, so its thread does not wait forever.
IDLE_CONNECTION_SECONDS = 30


_CONNECTION_NUMBERS = itertools.count(1)  # shared by both origins, so a number names one connection
_OPEN = threading.Condition()  # guards every server's open connections


class _ServerHandler(ServerHandler):
    """wsgiref's response writer speaking HTTP/1.1; it notes whether the connection may be reused."""

    http_version = "1.1"
    reusable = False

    def close(self) -> None:
        # Reuse only a connection whose response was complete: a body cut short (a drop fault)
        # or one of unknown length leaves the client nothing to delimit the next response by.
        try:
            # wsgiref sets these per response; its type stubs do not declare them.
            headers, environ = getattr(self, "headers", None), getattr(self, "environ", None) or {}
            length = headers.get("Content-Length") if headers is not None else None
            sent = getattr(self, "bytes_sent", 0)
            complete = length is not None and (environ.get("REQUEST_METHOD") == "HEAD" or sent == int(length))
            self.reusable = complete and not environ.get(CLOSE_CONNECTION_KEY)
        finally:
            super().close()


class _RequestHandler(WSGIRequestHandler):
    """wsgiref's handler with HTTP/1.1 keep-alive, the raw request path, and logging instead of stderr noise."""

    protocol_version = "HTTP/1.1"
    timeout = IDLE_CONNECTION_SECONDS
    # Headers and body go out in separate writes: without this, Nagle's algorithm holds the body
    # back until the client's delayed ACK, about 40 ms per request on a kept-alive connection.
    disable_nagle_algorithm = True

    def handle(self) -> None:
        self.close_connection = True
        self._handle_one()
        while not self.close_connection:
            self._handle_one()

    def _handle_one(self) -> None:
        try:
            self.raw_requestline = self.rfile.readline(65537)
        except TimeoutError:
            self.close_connection = True
            return
        if not self.raw_requestline or len(self.raw_requestline) > 65536:
            self.close_connection = True
            return
        if not self.parse_request():  # an error was sent; parse_request decided about the connection
            return
        handler = _ServerHandler(self.rfile, cast(IO[bytes], self.wfile), self.get_stderr(), self.get_environ(), multithread=False)
        handler.request_handler = self  # type: ignore[attr-defined]  # wsgiref logs through it
        app = cast(WSGIServer, self.server).get_app()
        if app is None:
            raise RuntimeError("the server has no WSGI app")
        handler.run(app)
        if not handler.reusable:
            self.close_connection = True

    def get_environ(self) -> dict[str, Any]:
        environ = super().get_environ()
        environ["REQUEST_URI"] = self.path
        environ[RAW_INPUT_KEY] = True
        return environ

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)


class _ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connections = 0  # TCP connections accepted, to see keep-alive at work
        self.open: dict[int, int] = {}  # socket id -> connection number, from accept until closed

    def process_request(self, request: Any, client_address: Any) -> None:
        # Called on the accepting thread, so connections are numbered in the order they were accepted.
        with _OPEN:
            self.connections += 1
            self.open[id(request)] = next(_CONNECTION_NUMBERS)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        try:
            super().shutdown_request(request)
        finally:
            with _OPEN:
                self.open.pop(id(request), None)
                _OPEN.notify_all()

    def server_bind(self) -> None:
        # HTTPServer.server_bind would look the host up in DNS (socket.getfqdn): skip it.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)
        self.setup_environ()


class _ThreadingWSGIServerV6(_ThreadingWSGIServer):
    address_family = socket.AF_INET6


def _bind(app: Callable[..., Any], host: str, port: int) -> _ThreadingWSGIServer:
    server_class = _ThreadingWSGIServerV6 if ":" in host else _ThreadingWSGIServer
    httpd = server_class((host, port), _RequestHandler)
    httpd.set_app(app)
    return httpd


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class HubServer:
    """A Hub-compatible server over a storage root, running in a background thread.

    Use as a context manager, or call `start()` and `stop()`. `faults` can be replaced at any
    time; `stats` counts the traffic. With `access` (tokens) or `publishers` it is strict; with
    `cdn`, LFS downloads are redirected to a second origin, as on the Hub (see `cdn.py`).
    """

    def __init__(
        self,
        root: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: FaultPlan | None = None,
        access: AccessPolicy | None = None,
        publishers: TrustedPublishers | None = None,
        page_size: int | None = None,
        cdn: bool = False,
    ) -> None:
        self.root = Path(root)
        self._with_cdn = cdn
        self._cdn: tuple[_ThreadingWSGIServer, threading.Thread] | None = None
        self.host = host
        self.stats = ServerStats()
        self._app = HubApp(HubStorage(self.root), self.stats, faults, access, publishers, page_size)
        self._requested_port = port
        self._httpd: _ThreadingWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def faults(self) -> FaultPlan:
        return self._app.faults

    @faults.setter
    def faults(self, plan: FaultPlan | None) -> None:
        self._app.faults = plan

    @property
    def app(self) -> HubApp:
        """The WSGI app itself, to serve in-process (e.g. through `httpx2.WSGITransport`)."""
        return self._app

    @property
    def connections(self) -> int:
        """TCP connections the Hub origin accepted so far (keep-alive makes this far below the requests)."""
        return self._httpd.connections if self._httpd is not None else 0

    def open_connections(self) -> frozenset[int]:
        """The numbers of the connections open now, on both origins."""
        with _OPEN:
            return self._open_numbers()

    def wait_closed_since(self, before: frozenset[int], timeout: float = 10.0) -> bool:
        """Wait until every connection opened since `before` was taken is closed.

        A killed client leaves requests the server has not read yet, or not answered yet; counting
        traffic from zero should start after them. A request of our own on a new connection goes
        first, so each origin has accepted everything queued before it (accepts are in order).
        Returns False if some are still open after `timeout`.
        """
        for server in self._origins():
            host, port = server.server_address[:2]
            probe = http.client.HTTPConnection(str(host), int(port), timeout=timeout)
            try:
                probe.request("GET", "/api/whoami-v2", headers={"Connection": "close"})
                probe.getresponse().read()
            finally:
                probe.close()
        with _OPEN:
            newer = self._open_numbers() - before
            return _OPEN.wait_for(lambda: not newer & self._open_numbers(), timeout)

    def _open_numbers(self) -> frozenset[int]:
        """Caller holds `_OPEN` (a reentrant lock)."""
        return frozenset(number for server in self._origins() for number in server.open.values())

    def _origins(self) -> list[_ThreadingWSGIServer]:
        return [server for server in (self._httpd, self._cdn[0] if self._cdn else None) if server is not None]

    @property
    def url(self) -> str:
        """The endpoint to give the client, e.g. `http://127.0.0.1:PORT`."""
        if self._httpd is None:
            raise RuntimeError("The server is not running: call start() first")
        return _url(self.host, self._httpd.server_port)

    def start(self) -> None:
        """Bind the port and serve in a daemon thread."""
        if self._httpd is not None:
            raise RuntimeError("The server is already running")
        if self._with_cdn:
            self._cdn = _start_cdn(self._app, self.host)
        self._httpd = _bind(self._app, self.host, self._requested_port)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="hub-server", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and release the port."""
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join()
        self._httpd, self._thread = None, None
        if self._cdn is not None:
            _stop(*self._cdn)
            self._cdn, self._app.cdn_url = None, None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def serve(
    root: Path,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    on_ready: Callable[[str], None] | None = None,
    access: AccessPolicy | None = None,
    publishers: TrustedPublishers | None = None,
) -> None:
    """Serve the Hub over `root` in the foreground until interrupted.

    `on_ready` receives the URL once the port is bound (useful with port 0).
    """
    app = HubApp(HubStorage(Path(root)), ServerStats(), None, access, publishers, TREE_PAGE_SIZE)
    cdn = _start_cdn(app, host)
    httpd = _bind(app, host, port)
    try:
        if on_ready is not None:
            on_ready(_url(host, httpd.server_port))
        httpd.serve_forever()
    finally:
        httpd.server_close()
        _stop(*cdn)


def _start_cdn(app: HubApp, host: str) -> tuple[_ThreadingWSGIServer, threading.Thread]:
    """Serve the CDN origin of `app` on a free port of `host`; `app` redirects LFS downloads to it."""
    httpd = _bind(CdnApp(app), host, 0)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="hub-cdn", daemon=True)
    thread.start()
    app.cdn_url = _url(host, httpd.server_port)
    return httpd, thread


def _stop(httpd: _ThreadingWSGIServer, thread: threading.Thread) -> None:
    httpd.shutdown()
    httpd.server_close()
    thread.join()
