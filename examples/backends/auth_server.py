#!/usr/bin/env python3
"""A stand-in for your backend's auth API, for the README walkthrough.

POST /websocket_auth with {"token": "tok<uid>"} answers {"uid": <uid>};
any other token gets 401. Standard library only.

    python3 examples/backends/auth_server.py [--port 8000]
"""
import argparse
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class AuthHandler(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        try:
            token = json.loads(self.rfile.read(length) or b"{}").get("token", "")
        except (ValueError, AttributeError):
            token = ""
        uid = token[3:] if isinstance(token, str) and token.startswith("tok") else ""
        if uid.isdigit():
            self.answer(200, {"uid": int(uid)})
        else:
            self.answer(401, {"error": "invalid token"})

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt, *args):
        print("auth:", fmt % args)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    print(f"auth API on http://127.0.0.1:{args.port}/websocket_auth (token tok<uid> -> uid)")
    ThreadingHTTPServer(("127.0.0.1", args.port), AuthHandler).serve_forever()


if __name__ == "__main__":
    main()
