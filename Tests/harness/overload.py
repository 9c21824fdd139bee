#!/usr/bin/env python3
"""Overload check for the harness: N clients at once, each posting a batch of one sleep of MS ms.

Usage: overload.py PORT N MS. Prints one JSON object: statuses by count, the slowest 503 answer
and the 99th percentile of the 200 answers, in seconds. Bounded: every client waits 30 s at most.
"""
import asyncio
import collections
import json
import sys
import time

PORT, N, MS = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
BODY = ('{"tasks":[{"id":"s","op":"sleep","input":{"ms":%d}}]}' % MS).encode()
REQUEST = (b"POST /batch HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nConnection: close\r\n"
           b"Content-Length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY)


async def one():
    start = time.monotonic()
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", PORT), 30)
        writer.write(REQUEST)
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 30)
        await asyncio.wait_for(reader.read(), 30)
        writer.close()
        return line.split()[1].decode(), time.monotonic() - start
    except Exception as error:  # a refused or reset connection is a result too
        return type(error).__name__, time.monotonic() - start


async def main():
    results = await asyncio.gather(*[one() for _ in range(N)])
    served = sorted(t for s, t in results if s == "200")
    shed = [t for s, t in results if s == "503"]
    print(json.dumps({
        "statuses": dict(collections.Counter(s for s, _ in results)),
        "served_p99_s": round(served[max(0, int(len(served) * 0.99) - 1)], 3) if served else None,
        "shed_max_s": round(max(shed), 3) if shed else None,
    }))


asyncio.run(main())
