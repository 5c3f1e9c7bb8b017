"""A webhook receiver for the end-to-end tests, run in a namespace of its own.

`python3 receiver.py HOST PORT SECRET LOG CONTROL`: checks every delivery's signature
itself (sharing no code with webhooks.py) and appends one JSON line per request to LOG.
While CONTROL/fail exists it answers 500; while CONTROL/slow exists it waits 5 s first.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HOST, PORT, SECRET, LOG, CONTROL = sys.argv[1:6]


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        stamp = self.headers.get("X-WG-Fleet-Timestamp", "")
        expected = (
            "sha256="
            + hmac.new(SECRET.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        )
        valid = hmac.compare_digest(expected, self.headers.get("X-WG-Fleet-Signature", ""))
        fresh = stamp.isdigit() and abs(time.time() - int(stamp)) < 120
        event = json.loads(body)
        record = {
            "delivery": self.headers.get("X-WG-Fleet-Delivery"),
            "type_header": self.headers.get("X-WG-Fleet-Event"),
            "valid": valid and fresh,
            "event": event,
        }
        with open(LOG, "a") as log:
            log.write(json.dumps({**record, "phase": "arrived"}) + "\n")
        if Path(CONTROL, "slow").exists():
            time.sleep(5)
        status = 500 if Path(CONTROL, "fail").exists() else 200
        with open(LOG, "a") as log:
            log.write(json.dumps({**record, "phase": "answered", "status": status}) + "\n")
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


ThreadingHTTPServer((HOST, int(PORT)), Handler).serve_forever()
