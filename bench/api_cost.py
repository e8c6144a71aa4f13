#!/usr/bin/env python3
"""bench/api_cost.py: the gateway's CPU per publish spent in the API alone,
one HTTP request per publish against POST /v1/mesh/batch (1,000 per request).

The publishes go to channels nobody subscribes to, so no frame is written:
what is left is the request (HTTP, JSON, dispatch, the channel lookup). The
gateway's CPU time is read from /proc/<pid>/stat before and after, so the
figure does not depend on how fast this (single, Python) client is or on
other load on the machine, only on the gateway's own work.

    python3 bench/api_cost.py <gateway pid> [api port, default 6789] [publishes, default 20000]
"""
import http.client
import json
import os
import sys
import time

pid = int(sys.argv[1])
port = int(sys.argv[2]) if len(sys.argv) > 2 else 6789
n = int(sys.argv[3]) if len(sys.argv) > 3 else 20000
tick = os.sysconf("SC_CLK_TCK")


def cpu_seconds():
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / tick


conn = http.client.HTTPConnection("127.0.0.1", port)


def post(path, body):
    conn.request("POST", path, body, {"Content-Type": "application/json"})
    r = conn.getresponse()
    data = r.read()
    if r.status != 200 or b'"E":null' not in data[:12]:
        sys.exit(f"{path}: {r.status} {data[:200]!r}")


def item(i):
    return {"c": f"nobody:{i}", "d": "x" * 100}


runs = [
    ("one request per publish", "/v1/mesh/publish", [json.dumps(item(i)) for i in range(n)]),
    (
        "/v1/mesh/batch, 1,000 per request",
        "/v1/mesh/batch",
        [
            json.dumps([{"m": "mesh.publish", "p": item(j * 1000 + i)} for i in range(1000)])
            for j in range(n // 1000)
        ],
    ),
]
for label, path, bodies in runs:
    c0, t0 = cpu_seconds(), time.time()
    for b in bodies:
        post(path, b)
    c1, t1 = cpu_seconds(), time.time()
    print(
        f"{label}: {n} publishes, gateway CPU {c1 - c0:.2f} s = "
        f"{(c1 - c0) / n * 1e6:.1f} us per publish (wall {t1 - t0:.1f} s)"
    )
