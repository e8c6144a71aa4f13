#!/usr/bin/env python3
"""bench/conn_memory.py: the clients bench/conn_memory.sh holds open while
it reads the gateway's heap. Not a test: it measures nothing itself.

Opens N WebSocket connections; each sends `join <i>`, on which the cost
script sets its user (`uid` = i) and joins `user:<i>` and `group:<i % 100>`
(the idle benchmark's two channels), and waits for `ok`. Once all have
joined it prints `joined` and waits for a line on stdin before it closes
them.

    conn_memory.py WS_PORT N

Needs the `websockets` package (pip install websockets).
"""

import asyncio
import sys

import websockets


async def client(port, i, joining, joined, leave):
    async with joining:
        ws = await websockets.connect(f"ws://127.0.0.1:{port}/chat", ping_interval=None)
        await ws.send(f"join {i}")
        answer = await ws.recv()
        assert answer == "ok", answer
    joined.release()
    await leave.wait()
    await ws.close()


async def main():
    port, n = int(sys.argv[1]), int(sys.argv[2])
    # At most 200 handshakes at a time (the listen backlog).
    joining, joined, leave = asyncio.Semaphore(200), asyncio.Semaphore(0), asyncio.Event()
    tasks = [asyncio.create_task(client(port, i, joining, joined, leave)) for i in range(n)]
    for _ in range(n):
        await joined.acquire()
    print("joined", flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    leave.set()
    await asyncio.gather(*tasks)


asyncio.run(main())
