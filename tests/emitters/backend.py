"""A python backend emitting through a message queue, as apps do it.

    python3 backend.py KIND URL CHANNEL < commands.json

KIND: kombu (socketio.KombuManager(write_only=True)), redis
(socketio.RedisManager(write_only=True)) or flask (flask_socketio.SocketIO(
message_queue=URL) without an app). commands.json is a list of
{"method": "emit", "event", "data", "room", "skip_sid", "namespace"},
{"method": "close_room", "room", "namespace"},
{"method": "disconnect", "sid", "namespace"} or
{"method": "enter_room" | "leave_room", "sid", "room", "namespace"}; data given as a list is
sent as several arguments (a tuple), and strings "b64:..." inside it as
bytes. Prints "sent N" when every command is published.
"""

import base64
import json
import sys


def decode_binary(v):
    if isinstance(v, str) and v.startswith("b64:"):
        return base64.b64decode(v[4:])
    if isinstance(v, list):
        return [decode_binary(x) for x in v]
    if isinstance(v, dict):
        return {k: decode_binary(x) for k, x in v.items()}
    return v


def manager(kind, url, channel):
    if kind == "kombu":
        import socketio
        return socketio.KombuManager(url, channel=channel, write_only=True)
    if kind == "redis":
        import socketio
        return socketio.RedisManager(url, channel=channel, write_only=True)
    if kind == "flask":
        from flask_socketio import SocketIO
        return SocketIO(message_queue=url, channel=channel)
    raise SystemExit(f"unknown kind {kind}")


def main():
    kind, url, channel = sys.argv[1:4]
    commands = json.load(sys.stdin)
    mgr = manager(kind, url, channel)
    for c in commands:
        ns = c.get("namespace", "/")
        if c["method"] == "emit":
            data = decode_binary(c.get("data"))
            if isinstance(data, list):
                data = tuple(data)
            if kind == "flask":
                mgr.emit(c["event"], data, to=c.get("room"),
                         skip_sid=c.get("skip_sid"), namespace=ns)
            else:
                mgr.emit(c["event"], data=data, room=c.get("room"),
                         skip_sid=c.get("skip_sid"), namespace=ns)
        elif c["method"] == "close_room":
            mgr.close_room(c["room"], namespace=ns)
        elif c["method"] in ("disconnect", "enter_room", "leave_room") and kind != "flask":
            # What a python server publishes for a socket on another host
            # (a write-only manager has no server to run these itself).
            mgr._publish({k: v for k, v in c.items()} | {"namespace": ns, "host_id": mgr.host_id})
        else:
            raise SystemExit(f"unknown method {c['method']}")
    print(f"sent {len(commands)}", flush=True)


main()
