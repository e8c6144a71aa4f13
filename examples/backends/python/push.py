#!/usr/bin/env python3
"""Push to connmix from a Python backend: standard library only.

    python3 push.py user 1001 "Hello"            # {"event":"@user",...} to every connection of user 1001
    python3 push.py publish user:1001 'any text'  # d delivered byte for byte to channel user:1001
    python3 push.py send 4294967297 'just you'    # to one connection (its conn:client_id())

Options (or environment): --api URL (CONNMIX_API, default http://127.0.0.1:6789),
--user NAME --password PW (CONNMIX_USER, CONNMIX_PASSWORD) when access.users is set.
Prints the result object ({"s": delivered, "f": failed} for publish); exits 1 on an
API error. Import it to use publish() / send() / push_to_user() directly.
"""
import argparse
import base64
import json
import os
import sys
import urllib.error
import urllib.request


class ConnmixError(Exception):
    """The API answered {"E": {"c": code, "m": message}} or an HTTP error."""

    def __init__(self, code, message):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def call(api, path, body, user=None, password=None, timeout=10):
    """POSTs a JSON body to the API and returns the envelope's "r"."""
    req = urllib.request.Request(
        api.rstrip("/") + path,
        data=json.dumps(body).encode("utf-8"),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    if user is not None:
        cred = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
        req.add_header("Authorization", "Basic " + cred)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            envelope = json.loads(resp.read().decode("utf-8"))
    except urllib.error.HTTPError as e:  # 401/403 access, 413 too large, ...
        raise ConnmixError(e.code, e.read().decode("utf-8", "replace").strip()) from None
    if envelope.get("E"):
        raise ConnmixError(envelope["E"]["c"], envelope["E"]["m"])
    return envelope["r"]


def publish(channel, data, **kw):
    """Every subscriber of channel receives data (a str) as one text frame."""
    return call(kw.pop("api", DEFAULT_API), "/v1/mesh/publish", {"c": channel, "d": data}, **kw)


def send(client_id, data, **kw):
    """One connection, on any node, receives data."""
    return call(kw.pop("api", DEFAULT_API), "/v1/mesh/send", {"c": str(client_id), "d": data}, **kw)


def push_to_user(uid, msg, **kw):
    """The message center's event for user uid (channel user:<uid>)."""
    uid_value = int(uid) if str(uid).isdigit() else uid
    data = json.dumps({"event": "@user", "data": {"uid": uid_value, "msg": msg}},
                      separators=(",", ":"), ensure_ascii=False)
    return publish(f"user:{uid}", data, **kw)


DEFAULT_API = os.environ.get("CONNMIX_API", "http://127.0.0.1:6789")


def main(argv=None):
    p = argparse.ArgumentParser(description="Push to connmix over its HTTP API.")
    p.add_argument("--api", default=DEFAULT_API, help="API base URL (default %(default)s)")
    p.add_argument("--user", default=os.environ.get("CONNMIX_USER"))
    p.add_argument("--password", default=os.environ.get("CONNMIX_PASSWORD"))
    sub = p.add_subparsers(dest="cmd", required=True)
    u = sub.add_parser("user", help="push {event:@user,data:{uid,msg}} to user:<uid>")
    u.add_argument("uid")
    u.add_argument("msg")
    pub = sub.add_parser("publish", help="publish data to a channel")
    pub.add_argument("channel")
    pub.add_argument("data")
    s = sub.add_parser("send", help="send data to one client id")
    s.add_argument("client_id")
    s.add_argument("data")
    a = p.parse_args(argv)
    kw = {"api": a.api, "user": a.user, "password": a.password}
    try:
        if a.cmd == "user":
            r = push_to_user(a.uid, a.msg, **kw)
        elif a.cmd == "publish":
            r = publish(a.channel, a.data, **kw)
        else:
            r = send(a.client_id, a.data, **kw)
    except ConnmixError as e:
        print(f"connmix error {e.code}: {e.message}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"cannot reach {a.api}: {e}", file=sys.stderr)
        return 1
    print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
