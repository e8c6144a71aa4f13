#!/usr/bin/env python3
"""bench/delivery_cost.py: the fixed workload bench/delivery_cost.sh runs
against a gateway under callgrind. Not a test: it measures nothing itself.

N WebSocket clients join the channel "all" (the cost script's `sub` frame),
then the publisher sends M publishes to it one after another, over the HTTP
API (`http`) or one `/ws/v1` connection (`ws`). Each publish goes out once
every client has received the one before (lock step), so every delivery is
written on its own and the counts do not depend on how the machine happens
to batch writes. The script fails unless every client receives all M.
Between the join and the publishes it asks the gateway to zero its
instruction counters, and once every client has everything, to dump them
(callgrind_control), so the dump holds the deliveries alone.

    delivery_cost.py PID API_PORT WS_PORT N M http|ws

Needs the `websockets` package (pip install websockets).
"""

import asyncio
import http.client
import json
import os
import signal
import subprocess
import sys

import websockets


class Lockstep:
    """Publish i+1 only once all n clients have received publish i."""

    def __init__(self, n, m):
        self.n, self.got, self.all = n, [0] * m, [asyncio.Event() for _ in range(m)]

    def received(self, i):
        self.got[i] += 1
        if self.got[i] == self.n:
            self.all[i].set()


async def client(port, m, ready, done, step):
    async with websockets.connect(
        f"ws://127.0.0.1:{port}/chat", max_queue=None, ping_interval=None
    ) as ws:
        await ws.send("sub")
        assert await ws.recv() == "ok"
        # A gateway that answers before the cluster hears the channel
        # (6912546 did) may drop the first publishes: probes are sent until
        # each client has one, and those left over are read here.
        while not (await ws.recv()).startswith("probe"):
            pass
        ready.release()
        while True:
            msg = await ws.recv()
            if not msg.startswith("probe"):
                break
        step.received(0)
        for i in range(1, m):
            await ws.recv()
            step.received(i)
        done.release()
        await ws.close()


async def probe(api, n, ready):
    """Publishes "probe" every 50 ms until all n clients have had one."""
    conn = http.client.HTTPConnection("127.0.0.1", api)
    ready_count = 0
    while ready_count < n:
        body = json.dumps({"c": "all", "d": "probe"})
        conn.request("POST", "/v1/mesh/publish", body, {"Content-Type": "application/json"})
        await asyncio.to_thread(lambda: conn.getresponse().read())
        try:
            await asyncio.wait_for(ready.acquire(), 0.05)
            ready_count += 1
            while ready_count < n and not ready.locked():
                await ready.acquire()
                ready_count += 1
        except asyncio.TimeoutError:
            pass


async def publish_http(port, m, step):
    conn = http.client.HTTPConnection("127.0.0.1", port)
    for i in range(m):
        if i:
            await step.all[i - 1].wait()
        body = json.dumps({"c": "all", "d": f"message {i:08d} " + "x" * 100})
        conn.request("POST", "/v1/mesh/publish", body, {"Content-Type": "application/json"})
        resp = await asyncio.to_thread(conn.getresponse)
        answer = resp.read()
        assert resp.status == 200, answer


async def publish_ws(port, m, step):
    async with websockets.connect(f"ws://127.0.0.1:{port}/ws/v1", ping_interval=None) as ws:
        for i in range(m):
            if i:
                await step.all[i - 1].wait()
            req = {"m": "mesh.publish", "i": i, "p": {"c": "all", "d": f"message {i:08d} " + "x" * 100}}
            await ws.send(json.dumps(req))
            answer = json.loads(await ws.recv())
            assert answer.get("E") is None, answer


class Counters:
    """callgrind's counters (zeroed, then dumped), or with PERF_OUT set,
    `perf stat` counting the gateway's system calls, context switches and
    CPU time over the same span (its report goes to PERF_OUT)."""

    def __init__(self, pid):
        self.pid, self.perf = pid, None

    def start(self):
        out = os.environ.get("PERF_OUT")
        if out:
            # Counting starts disabled (-D -1) and is switched on and off
            # through perf's control fifo, whose ack says when it happened.
            self.ctl, self.ack = out + ".ctl", out + ".ack"
            for f in (self.ctl, self.ack):
                os.mkfifo(f)
            events = "raw_syscalls:sys_enter,context-switches,task-clock"
            self.perf = subprocess.Popen(["perf", "stat", "-x,", "-o", out, "-e", events, "-D", "-1",
                                          f"--control=fifo:{self.ctl},{self.ack}", "-p", self.pid],
                                         stderr=subprocess.DEVNULL)
            self.perf_command("enable")
        else:
            self.control("--zero")

    def stop(self):
        if self.perf:
            self.perf_command("disable")
            self.perf.send_signal(signal.SIGINT)
            self.perf.wait()
        else:
            self.control("--dump")

    def perf_command(self, what):
        with open(self.ctl, "w") as ctl:
            ctl.write(what + "\n")
        with open(self.ack) as ack:
            assert ack.readline().strip() == "ack", what

    def control(self, what):
        subprocess.run(["callgrind_control", what, self.pid], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def main():
    pid, api, port, n, m, how = sys.argv[1:7]
    api, port, n, m = int(api), int(port), int(n), int(m)
    ready, done, step = asyncio.Semaphore(0), asyncio.Semaphore(0), Lockstep(n, m)
    tasks = [asyncio.create_task(client(port, m, ready, done, step)) for _ in range(n)]
    probing = asyncio.create_task(probe(api, n, ready))
    await probing
    counters = Counters(pid)
    await asyncio.to_thread(counters.start)
    if how == "http":
        await publish_http(api, m, step)
    else:
        await publish_ws(api, m, step)
    for _ in range(n):
        await done.acquire()
    await asyncio.to_thread(counters.stop)
    await asyncio.gather(*tasks)


asyncio.run(main())
