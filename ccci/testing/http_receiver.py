"""A loopback HTTP receiver for notification tests: it answers every request ``200 {}``
and appends it to a JSON-lines log, so a test reads what Apprise (``json://``,
``ntfy://``...) or a webhook really sent.

Run it where the sender runs (the e2e tests: in the loopback-only network namespace,
``ip netns exec NS python -m ccci.testing.http_receiver --log FILE``): it prints its URL,
``http://127.0.0.1:PORT``, as its first line on stdout, then serves until SIGTERM.

Each log line is ``{"time": float (Unix seconds, UTC), "method": str, "path": str,
"headers": {name: value}, "body": str}``.

In-process use (unit tests)::

    with Receiver() as r:
        ... send to f"json://127.0.0.1:{r.port}/hook" ...
        r.got  # [(method, path, body text), ...]
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

__all__ = ["Receiver", "main"]


class Receiver:
    """A ``ThreadingHTTPServer`` on ``host``: ``port`` (0: a free one) in a daemon thread.

    :param host: address to bind (loopback by default).
    :param port: TCP port; 0 picks a free one (read :attr:`port`).
    :param log: a file to append one JSON line per request to, or ``None``.

    :attr:`got` holds ``(method, path, body)`` tuples in arrival order.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, log: Path | None = None) -> None:
        got: list[tuple[str, str, str]] = []
        self.got = got
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def _record(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n).decode("utf-8", "replace") if n else ""
                with lock:
                    got.append((self.command, self.path, body))
                    if log is not None:
                        rec: dict[str, Any] = {"time": time.time(), "method": self.command, "path": self.path,
                                               "headers": dict(self.headers.items()), "body": body}
                        with open(log, "a", encoding="utf-8") as fh:
                            fh.write(json.dumps(rec) + "\n")
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            do_POST = do_PUT = do_GET = _record  # noqa: N815 - http.server's names

            def log_message(self, *a: Any) -> None:
                pass

        self.srv = ThreadingHTTPServer((host, port), Handler)
        self.port: int = self.srv.server_port
        self.url = f"http://{host}:{self.port}"
        self._thread = threading.Thread(target=self.srv.serve_forever, name="http-receiver", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop serving and close the socket."""
        self.srv.shutdown()
        self.srv.server_close()

    def __enter__(self) -> "Receiver":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def main(argv: list[str] | None = None) -> int:
    """``python -m ccci.testing.http_receiver [--port N] --log FILE``: serve until SIGTERM
    or SIGINT; the first stdout line is the URL."""
    ap = argparse.ArgumentParser(prog="python -m ccci.testing.http_receiver")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--log", type=Path, required=True, help="JSON-lines file, one line per request")
    ns = ap.parse_args(argv)
    r = Receiver(ns.host, ns.port, ns.log)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    print(r.url, flush=True)
    while not done.wait(0.5):
        pass
    r.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
