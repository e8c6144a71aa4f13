"""client_python.py: python-socketio's client (default transports: polling,
then the upgrade to WebSocket) against a running connmix Socket.IO server.
Run by tests/socketio.rs: `python3 client_python.py <scenario>` with the
environment of scenarios.mjs (SIO_URL, ECHO_URL, API_URL, TOKEN, USER_ID).
Prints "ok <scenario>" and exits 0, or raises.
"""

import json
import os
import sys
import threading
import time
import urllib.request

import socketio

ENV = os.environ
TIMEOUT = 15


def publish(body):
    req = urllib.request.Request(ENV["API_URL"] + "/v1/mesh/publish", data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(req, timeout=TIMEOUT) as r:
        out = json.load(r)
    assert out["r"]["s"] >= 1, f"publish {body} reached nobody: {out}"


class Inbox:
    """Events of one name, waited for with a deadline."""

    def __init__(self, sio, event):
        self.items = []
        self.cond = threading.Condition()
        sio.on(event, self.put)

    def put(self, *args):
        with self.cond:
            self.items.append(args)
            self.cond.notify_all()

    def get(self):
        with self.cond:
            assert self.cond.wait_for(lambda: self.items, TIMEOUT), "no event in time"
            return self.items.pop(0)


def wait_until(check, what):
    """Polls `check` until it holds (with a deadline): for what the client
    exposes no event for, such as its transport after the upgrade."""
    deadline = time.monotonic() + TIMEOUT
    while not check():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.02)


def connected(url, **kw):
    sio = socketio.Client(reconnection=False)
    sio.connect(url, wait_timeout=TIMEOUT, **kw)
    return sio


def upgrades_and_receives(sio):
    # python-socketio opens with polling (only a polling open offers an
    # upgrade) and upgrades to WebSocket.
    assert sio.eio.upgrades == ["websocket"], sio.eio.upgrades
    wait_until(lambda: sio.transport() == "websocket", "upgrade to websocket")
    notify = Inbox(sio, "following notify")
    publish({"c": f"user:{ENV['USER_ID']}", "e": "following notify", "d": json.dumps({"user_id": 1})})
    assert notify.get() == ({"user_id": 1},)
    ack = sio.call("subscribe", {"channel": "public:py"}, timeout=TIMEOUT)
    assert ack == {"result": True}, ack
    plain = Inbox(sio, "message")
    publish({"c": "public:py", "d": "hello"})
    assert plain.get() == ("hello",)


def scenario_query_token():
    sio = connected(f"{ENV['SIO_URL']}?token={ENV['TOKEN']}")
    upgrades_and_receives(sio)
    sio.disconnect()


def scenario_auth_token():
    sio = connected(ENV["SIO_URL"], auth={"token": ENV["TOKEN"]})
    upgrades_and_receives(sio)
    sio.disconnect()


def scenario_bad_token():
    sio = socketio.Client(reconnection=False)
    errors = Inbox(sio, "connect_error")
    try:
        sio.connect(ENV["SIO_URL"], auth={"token": "aaa.bbb.ccc"}, wait_timeout=TIMEOUT)
    except socketio.exceptions.ConnectionError:
        pass
    else:
        raise AssertionError("connected with a bad token")
    # The script's message reaches the client's connect_error handler.
    (error,) = errors.get()
    message = error["message"] if isinstance(error, dict) else error
    assert message.startswith("Auth failed"), error


def scenario_binary():
    sio = connected(ENV["ECHO_URL"])
    back = Inbox(sio, "message-back")
    sio.emit("message", (b"\x01\x02\x03", {"nested": b"\x04"}, "text"))
    assert back.get() == (b"\x01\x02\x03", {"nested": b"\x04"}, "text")
    assert sio.call("message-with-ack", b"\x09", timeout=TIMEOUT) == b"\x09"
    sio.disconnect()


SCENARIOS = {
    "query-token": scenario_query_token,
    "auth-token": scenario_auth_token,
    "bad-token": scenario_bad_token,
    "binary": scenario_binary,
}

if __name__ == "__main__":
    name = sys.argv[1]
    SCENARIOS[name]()
    print(f"ok {name}", flush=True)
    os._exit(0)
