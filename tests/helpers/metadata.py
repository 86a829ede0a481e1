"""A fake cloud instance metadata service on 127.0.0.1 (what the preemption watcher reads)."""
from __future__ import annotations

import json
import time


class FakeInstanceMetadata:
    """An EC2 instance metadata service (IMDSv2) on 127.0.0.1: no spot notice (404) until ``reclaim``,
    then ``spot/instance-action`` says terminate at that time, as AWS does two minutes ahead. The notice
    is this object's own; ``close`` stops its server."""

    def __init__(self):
        import http.server
        import threading
        notice: dict = {}
        self.notice = notice

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, code: int, body: str = "") -> None:
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())

            def do_PUT(self):  # IMDSv2: a session token first
                ok = self.path == "/latest/api/token" and self.headers.get("X-aws-ec2-metadata-token-ttl-seconds")
                self._send(200, "imds-token") if ok else self._send(400)

            def do_GET(self):
                if self.headers.get("X-aws-ec2-metadata-token") != "imds-token":
                    self._send(401)
                elif self.path == "/latest/meta-data/spot/instance-action" and notice:
                    self._send(200, json.dumps(notice))
                else:
                    self._send(404)
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def reclaim(self, in_seconds: float) -> None:
        when = time.gmtime(time.time() + in_seconds)
        self.notice.update(action="terminate", time=time.strftime("%Y-%m-%dT%H:%M:%SZ", when))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
