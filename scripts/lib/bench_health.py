#!/usr/bin/env python3
"""Health endpoint for `scripts/bench health`: answers 503 until it turns healthy, then 200.

    bench_health.py PORTFILE STATEFILE

Binds a free port (written to PORTFILE). The endpoint turns healthy at the instant
written (as Unix seconds) to STATEFILE's `at` line by the benchmark; until then, and for a
missing STATEFILE, it answers 503. Every request is counted; GET /stats returns
`{"requests": N, "healthy_at": T, "first_ok": T}`.
"""
import http.server
import json
import os
import sys
import threading
import time

port_file, state_file = sys.argv[1], sys.argv[2]
lock = threading.Lock()
stats = {"requests": 0, "healthy_at": None, "first_ok": None}


def healthy_at():
    try:
        with open(state_file) as f:
            return float(f.read().strip())
    except (OSError, ValueError):
        return None


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path == "/stats":
            body = json.dumps(stats).encode()
            code = 200
        elif self.path == "/reset":
            with lock:
                stats.update(requests=0, healthy_at=None, first_ok=None)
            body, code = b"reset", 200
        else:
            now = time.time()
            at = healthy_at()
            ok = at is not None and now >= at
            with lock:
                stats["requests"] += 1
                stats["healthy_at"] = at
                if ok and stats["first_ok"] is None:
                    stats["first_ok"] = now
            body, code = (b"ok", 200) if ok else (b"starting", 503)
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
with open(port_file + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
os.rename(port_file + ".tmp", port_file)
server.serve_forever()
