#!/usr/bin/env python3
"""A real upstream API for the harness's `http` checks, on 127.0.0.1 only.

Usage: upstream.py PORT

  ANY  /echo/...            200: {"method", "path", "query", "headers", "body"} of the request
  GET  /status/N            status N with {"status": N}; ?retry_after=V adds Retry-After,
                            ?set_cookie=1 adds Set-Cookie
  ANY  /flaky/KEY?fail=N    the first N calls for KEY answer ?status= (503) with ?retry_after=,
                            then 200 {"calls": n, "idempotency_key": ...}
  GET  /slow/KEY?ms=N       answers after N ms, unless the caller goes away first;
                            /events/KEY then says "completed" or "caller_closed"
  GET  /big?bytes=N         N bytes of text (?chunked=1: without Content-Length)
  GET  /auth                {"authorization_sha256": digest of the Authorization received}
  GET  /redirect            302 to /echo/redirected
  GET  /text, /binary       a text/plain body, and bytes that are not UTF-8
  GET  /drop                closes the connection without answering
  GET  /counts              how often each path was called
Every loop here is bounded; the server stops when its parent harness kills it.
"""
import hashlib
import json
import select
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

LOCK = threading.Lock()
COUNTS = {}
EVENTS = {}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send_body(self, status, content_type, body, headers=()):
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, text in headers:
            self.send_header(name, text)
        self.end_headers()
        self.wfile.write(body)

    def send_json(self, status, value, headers=()):
        self.send_body(status, "application/json", json.dumps(value).encode(), headers)

    def caller_closed(self):
        readable, _, _ = select.select([self.connection], [], [], 0)
        if not readable:
            return False
        try:
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def handle_any(self):
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        with LOCK:
            COUNTS[url.path] = COUNTS.get(url.path, 0) + 1
            count = COUNTS[url.path]
        parts = url.path.split("/")
        if url.path.startswith("/echo"):
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode("utf-8", "replace")
            self.send_json(200, {
                "method": self.command, "path": url.path, "query": parse_qs(url.query),
                "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body})
        elif url.path.startswith("/status/"):
            headers = []
            if "retry_after" in query:
                headers.append(("Retry-After", query["retry_after"]))
            if "set_cookie" in query:
                headers.append(("Set-Cookie", "session=secret; HttpOnly"))
            self.send_json(int(parts[2]), {"status": int(parts[2])}, headers)
        elif url.path.startswith("/flaky/"):
            if count <= int(query.get("fail", "1")):
                headers = [("Retry-After", query["retry_after"])] if "retry_after" in query else []
                self.send_json(int(query.get("status", "503")), {"calls": count}, headers)
            else:
                self.send_json(200, {"calls": count, "idempotency_key": self.headers.get("Idempotency-Key")})
        elif url.path.startswith("/slow/"):
            key = parts[2]
            deadline = time.monotonic() + int(query.get("ms", "1000")) / 1000
            while time.monotonic() < deadline:
                if self.caller_closed():
                    with LOCK:
                        EVENTS[key] = "caller_closed"
                    self.close_connection = True
                    return
                time.sleep(0.01)
            with LOCK:
                EVENTS[key] = "completed"
            self.send_json(200, {"slept_ms": int(query.get("ms", "1000"))})
        elif url.path.startswith("/events/"):
            with LOCK:
                self.send_json(200, {"event": EVENTS.get(parts[2])})
        elif url.path == "/big":
            size = int(query.get("bytes", "1000"))
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            if query.get("chunked") == "1":
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                sent = 0
                try:
                    while sent < size:
                        piece = min(1000, size - sent)
                        self.wfile.write(b"%x\r\n" % piece + b"x" * piece + b"\r\n")
                        sent += piece
                    self.wfile.write(b"0\r\n\r\n")
                except OSError:
                    self.close_connection = True
            else:
                self.send_header("Content-Length", str(size))
                self.end_headers()
                try:
                    self.wfile.write(b"x" * size)
                except OSError:
                    self.close_connection = True
        elif url.path == "/auth":
            received = self.headers.get("Authorization") or ""
            self.send_json(200, {"authorization_sha256": hashlib.sha256(received.encode()).hexdigest()})
        elif url.path == "/redirect":
            self.send_body(302, None, b"", [("Location", "/echo/redirected")])
        elif url.path == "/text":
            self.send_body(200, "text/plain; charset=utf-8", "plain text, not JSON".encode())
        elif url.path == "/binary":
            self.send_body(200, "application/octet-stream", bytes([0xFF, 0xFE, 0x00, 0x01]))
        elif url.path == "/drop":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
        elif url.path == "/counts":
            with LOCK:
                self.send_json(200, dict(COUNTS))
        else:
            self.send_json(404, {"error": "not_found"})

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = handle_any


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256


if __name__ == "__main__":
    Server(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
