"""A fault-injecting HTTP proxy for the GCS emulator, on 127.0.0.1.

Why a proxy and not a mock: the storage client, Beam's GcsIO and their retry machinery
run unchanged; only the wire misbehaves, the way GCS does under load. Each request is,
by a seeded draw, passed through, answered 429 or 503, reset (TCP RST before any response
byte) or stalled (held, then passed through). An object named in ``vanish`` is deleted
upstream just before its first media read, so it disappears between listing and
reading exactly as a concurrent delete would. The emulator's own address in response
bodies (``mediaLink``) is rewritten to the proxy's, so media downloads pass through too.
"""

from __future__ import annotations

import http.client
import io
import json
import random
import socket
import struct
import threading
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, FrozenSet, Iterable, Optional, Tuple

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
              "proxy-authorization", "proxy-authenticate"}
FAULTS = ("429", "503", "reset", "stall")


@dataclass
class FaultPlan:
    """What to inject: ``fraction`` of requests whose method is in ``methods`` get one of
    ``kinds`` (uniformly); ``vanish`` names objects ('bucket/name') deleted upstream
    at the first request for that object, i.e. after listing, before reading."""

    fraction: float = 0.0
    kinds: Tuple[str, ...] = FAULTS
    methods: FrozenSet[str] = frozenset({"GET"})
    stall_s: float = 2.0
    seed: int = 0
    vanish: FrozenSet[str] = frozenset()
    injected: Counter = field(default_factory=Counter)
    requests: Counter = field(default_factory=Counter)


class _QuietServer(ThreadingHTTPServer):
    """A client hanging up on a reset connection is the point, not an error to print."""

    def handle_error(self, request: object, client_address: object) -> None:
        pass


def _object_name(path: str) -> Optional[str]:
    """'bucket/name' of a JSON-API object request (metadata or media), else None."""
    parts = urllib.parse.urlsplit(path).path.split("/")
    # /storage/v1/b/<bucket>/o/<name> or /download/storage/v1/b/<bucket>/o/<name>
    if "b" in parts and "o" in parts:
        b, o = parts.index("b"), parts.index("o")
        if o == b + 2 and len(parts) > o + 1 and parts[o + 1]:
            return f"{parts[b + 1]}/{urllib.parse.unquote(parts[o + 1])}"
    return None


class FaultProxy:
    """``with FaultProxy(upstream, plan) as url:`` point STORAGE_EMULATOR_HOST at url."""

    def __init__(self, upstream: str, plan: FaultPlan) -> None:
        self.upstream = urllib.parse.urlsplit(upstream)
        self.plan = plan
        self._rng = random.Random(plan.seed)
        self._lock = threading.Lock()
        self._vanished: set = set()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet
                pass

            def _any(self) -> None:
                proxy._handle(self)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _any

        self._server = _QuietServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> str:
        self._thread.start()
        return self.url

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _draw(self, method: str) -> Optional[str]:
        with self._lock:
            self.plan.requests[method] += 1
            if method not in self.plan.methods or self._rng.random() >= self.plan.fraction:
                return None
            kind = self._rng.choice(self.plan.kinds)
            self.plan.injected[kind] += 1
            return kind

    def _upstream(self, method: str, path: str, headers: Iterable[Tuple[str, str]],
                  body: Optional[bytes]) -> Tuple[int, list, bytes]:
        conn = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port,
                                          timeout=30)
        try:
            conn.request(method, path, body=body, headers=dict(headers))
            resp = conn.getresponse()
            return resp.status, resp.getheaders(), resp.read()
        finally:
            conn.close()

    def _vanish_first(self, path: str) -> None:
        name = _object_name(path)
        if name is None or name not in self.plan.vanish:
            return
        with self._lock:
            if name in self._vanished:
                return
            self._vanished.add(name)
        bucket, obj = name.split("/", 1)
        self._upstream("DELETE", f"/storage/v1/b/{bucket}/o/"
                       f"{urllib.parse.quote(obj, safe='')}", [], None)

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else None
        kind = self._draw(h.command)
        if kind == "reset":
            # RST instead of FIN: the client sees ECONNRESET, as from a dropped connection.
            h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            h.connection.close()
            h.close_connection = True
            h.wfile = io.BytesIO()           # the handler's final flush goes nowhere
            return
        if kind in ("429", "503"):
            code = int(kind)
            payload = json.dumps({"error": {"code": code, "message": "injected by FaultProxy"}
                                  }).encode()
            self._reply(h, code, [("Content-Type", "application/json")], payload)
            return
        if kind == "stall":
            time.sleep(self.plan.stall_s)
        self._vanish_first(h.path)
        headers = [(k, v) for k, v in h.headers.items() if k.lower() not in HOP_BY_HOP]
        status, resp_headers, payload = self._upstream(h.command, h.path, headers, body)
        # The emulator names itself in mediaLink/selfLink; keep the client on the proxy.
        payload = payload.replace(self.upstream.netloc.encode(),
                                  f"127.0.0.1:{self._server.server_address[1]}".encode())
        self._reply(h, status, resp_headers, payload)

    @staticmethod
    def _reply(h: BaseHTTPRequestHandler, status: int, headers: Iterable[Tuple[str, str]],
               payload: bytes) -> None:
        h.send_response(status)
        for k, v in headers:
            if k.lower() not in HOP_BY_HOP and k.lower() != "content-length":
                h.send_header(k, v)
        h.send_header("Content-Length", str(len(payload)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(payload)


def faults_summary(plan: FaultPlan) -> Dict[str, int]:
    return {**{f"injected_{k}": plan.injected[k] for k in plan.kinds},
            "requests": sum(plan.requests.values())}
