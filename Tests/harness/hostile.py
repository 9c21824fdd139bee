#!/usr/bin/env python3
"""Hostile traffic at the edges, through nginx, while an ordinary client keeps working.

Usage: hostile.py PORT FANOUT_PID [IDLE]
Holds IDLE (default 5000) idle connections, some with half-sent headers; 50 bodies sent a few
bytes a second; 50 bodies that stop half-way and hang up; then a flood of 2,000 batches at once
(most shed with 503). Meanwhile an ordinary client sends one-task batches. Prints one JSON
object: the ordinary client's statuses outside the flood and during it, its slowest answer, the
flood's statuses, and Fanout's descriptors and resident memory before, during and after.
"""
import json
import os
import resource
import socket
import sys
import threading
import time

PORT = int(sys.argv[1])
PID = int(sys.argv[2])
IDLE = int(sys.argv[3]) if len(sys.argv) > 3 else 5000
BODY = b'{"tasks":[{"id":"a","op":"echo","input":{"x":1}}]}'
SLEEP_BODY = b'{"tasks":[{"id":"s","op":"sleep","input":{"ms":300}}]}'


def fanout_figures():
    with open(f"/proc/{PID}/status") as file:
        rss = next(int(line.split()[1]) for line in file if line.startswith("VmRSS:"))
    return {"fds": len(os.listdir(f"/proc/{PID}/fd")), "rss_kib": rss}


def connect():
    sock = socket.create_connection(("127.0.0.1", PORT), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def head(length, path="/batch"):
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\nConnection: close\r\n\r\n").encode()


def post(body, timeout=30):
    """One request on its own connection; returns (status, seconds)."""
    started = time.monotonic()
    try:
        with connect() as sock:
            sock.settimeout(timeout)
            sock.sendall(head(len(body)) + body)
            data = b""
            while b"\r\n" not in data:
                chunk = sock.recv(4096)
                if not chunk:
                    return 0, time.monotonic() - started
                data += chunk
            status = int(data.split(b" ", 2)[1])
            while sock.recv(65536):
                pass
            return status, time.monotonic() - started
    except OSError:
        return -1, time.monotonic() - started


def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, IDLE + 4096), hard))
    report = {"before": fanout_figures()}
    held = []
    # Idle connections: half of them never send a byte, half stop inside their headers.
    for index in range(IDLE):
        sock = connect()
        if index % 2:
            sock.sendall(b"POST /batch HTTP/1.1\r\nHost: x\r\n")
        held.append(sock)
    # Slow bodies: a few bytes a second; bodies that stop half-way and hang up.
    stop = threading.Event()
    slow = [connect() for _ in range(50)]
    for sock in slow:
        sock.sendall(head(len(BODY)))

    def trickle():
        sent = 0
        while not stop.is_set() and sent < len(BODY) - 1:
            for sock in slow:
                try:
                    sock.sendall(BODY[sent:sent + 1])
                except OSError:
                    pass
            sent += 1
            stop.wait(0.5)

    trickler = threading.Thread(target=trickle)
    trickler.start()
    for _ in range(50):
        with connect() as sock:
            sock.sendall(head(len(BODY)) + BODY[: len(BODY) // 2])
    # The ordinary client, while all of that is held.
    ordinary = [post(BODY, timeout=10) for _ in range(50)]
    report["during"] = fanout_figures()
    # A flood: 2,000 batches at once; past the limit they are shed with 503.
    results = []
    lock = threading.Lock()

    def flood_one():
        outcome = post(SLEEP_BODY)
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=flood_one) for _ in range(2000)]
    for thread in threads:
        thread.start()
    # During the flood the ordinary client competes for the same slots: it is served or shed at
    # once, like everyone (per-client limits, with clients kept apart, are what protect it).
    during_flood = [post(BODY, timeout=10) for _ in range(20)]
    for thread in threads:
        thread.join()
    report["after_flood"] = fanout_figures()
    stop.set()
    trickler.join()
    for sock in held + slow:
        sock.close()
    time.sleep(1)
    ordinary += [post(BODY, timeout=10) for _ in range(20)]
    report["after"] = fanout_figures()
    statuses = {}
    for status, _ in ordinary:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    flood = {}
    for status, _ in results:
        flood[str(status)] = flood.get(str(status), 0) + 1
    report["ordinary_statuses"] = statuses
    report["ordinary_slowest_s"] = round(max(seconds for _, seconds in ordinary + during_flood), 3)
    report["ordinary_during_flood"] = sorted({str(status) for status, _ in during_flood})
    report["flood_statuses"] = flood
    print(json.dumps(report))


main()
