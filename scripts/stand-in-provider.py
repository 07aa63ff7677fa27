#!/usr/bin/env python3
"""A stand-in OpenAI-compatible provider for local development and the dApp walkthrough.

POST /v1/chat/completions answers with a deterministic completion that echoes the last user
message; nothing leaves the machine. Usage: python3 scripts/stand-in-provider.py [PORT]
(default 8099). Stop it with Ctrl-C.
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        if self.path.rstrip("/") != "/v1/chat/completions":
            return self.reply(404, {"error": {"message": f"no route {self.path}"}})
        try:
            length = int(self.headers.get("content-length", "0"))
            req = json.loads(self.rfile.read(length))
            messages = req["messages"]
            last = next(m for m in reversed(messages) if m.get("role") == "user")
        except (ValueError, KeyError, StopIteration, TypeError) as e:
            return self.reply(400, {"error": {"message": f"bad chat request: {e}"}})
        content = f"stand-in answer to: {last.get('content', '')}"
        self.reply(200, {
            "object": "chat.completion",
            "model": req.get("model"),
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content}}],
        })

    def reply(self, status, body):
        data = json.dumps(body, sort_keys=True).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt, *args):
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8099
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"stand-in provider on http://127.0.0.1:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
