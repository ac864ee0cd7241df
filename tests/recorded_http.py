"""A local HTTP server for the uncheatable sources' tests: the real requests + urllib3 stack (retries,
Retry-After) talks to 127.0.0.1, and an `app` answers with recorded responses. No network.

`app(path_and_query) -> Reply`; Reply.body is bytes, or DROP (close the connection with no answer) or CUT
(promise more bytes than are sent, then close: a body cut short)."""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

DROP, CUT = object(), object()


@dataclass
class Reply:
    status: int = 200
    body: bytes | object = b""
    headers: dict = field(default_factory=dict)
    content_type: str = "application/json"


def json_reply(data, status: int = 200, **headers) -> Reply:
    return Reply(status, json.dumps(data).encode("utf-8"), headers)


def file_reply(path: Path, status: int = 200, **headers) -> Reply:
    return Reply(status, Path(path).read_bytes(), headers)


class LocalServer:
    """`with LocalServer(app) as server:` serves `app` on server.url; `log` holds every path asked (with its
    query), `times` when, `headers` the request headers."""

    def __init__(self, app=None):
        self.app = app
        self.log: list[str] = []
        self.times: list[float] = []
        self.headers: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                outer.log.append(self.path)
                outer.times.append(time.monotonic())
                outer.headers.append(dict(self.headers))
                reply = outer.app(self.path)
                if reply.body is DROP:
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                cut = reply.body is CUT
                body = b"x" * 100 if cut else reply.body
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                self.send_header("Content-Length", str(len(body) + (1000 if cut else 0)))
                for key, value in reply.headers.items():
                    self.send_header(key.replace("_", "-"), str(value))
                self.end_headers()
                self.wfile.write(body)
                if cut:
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
