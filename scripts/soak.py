#!/usr/bin/env python3
"""The soak run behind `make soak` (started by scripts/soak.sh, which brings up the stack).

Usage: soak.py PORT FANOUT_PID SOCKET SECONDS OUTPUT_DIR

Mixed load through nginx for SECONDS: synchronous batches of 1 to 10,000 tasks, streams,
asynchronous jobs (some cancelled), invalid bodies, clients that vanish mid-body and mid-stream,
http tasks against an upstream that is slow, fails and drops connections, and idle connections
held open throughout. Every few seconds it samples Fanout's resident memory, open descriptors,
threads and FastCGI connections. It fails when a figure grows after warm-up beyond 10%, when a
5xx other than shedding (503 overloaded or too-many-jobs) appears, or when an accepted job is lost. It writes
soak.json and soak.svg into OUTPUT_DIR.
"""
import json
import os
import random
import resource
import socket
import statistics
import sys
import threading
import time

PORT, PID, SOCKET_PATH = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
SECONDS, OUTPUT = float(sys.argv[4]), sys.argv[5]
SAMPLE_EVERY = max(1.0, min(5.0, SECONDS / 60))
WARM_UP = SECONDS * 0.2
WORKERS = 12
IDLE_CONNECTIONS = 1000

lock = threading.Lock()
statuses = {}          # scenario -> {status: count}
unexpected = []        # (scenario, status, detail)
jobs = {}              # job id -> "submitted" | "cancel_requested"
samples = []           # (t, rss_mib, fds, threads, fastcgi)
stop = threading.Event()
random.seed(20261130)


def record(scenario, status, detail=""):
    with lock:
        counts = statuses.setdefault(scenario, {})
        counts[str(status)] = counts.get(str(status), 0) + 1
        # A 5xx other than shedding, a request the client could not complete (-1), or a
        # connection closed without an answer (0).
        shed = status == 503 and (b"/problems/overloaded" in detail or b"/problems/too-many-jobs" in detail)
        if status >= 500 and not shed or status in (-1, 0):
            unexpected.append((scenario, status, detail[:300].decode("utf-8", "replace")))


def request(method, path, body=b"", headers=(), read_all=True, timeout=75):
    """One HTTP/1.1 exchange on a fresh connection; returns (status, body bytes)."""
    with socket.create_connection(("127.0.0.1", PORT), timeout=timeout) as sock:
        lines = [f"{method} {path} HTTP/1.1", "Host: soak", "Connection: close", f"Content-Length: {len(body)}"]
        lines += [f"{name}: {value}" for name, value in headers]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            if not read_all and b"\r\n\r\n" in data:
                break
    head, _, rest = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
    return status, rest


JSON = ("Content-Type", "application/json")


def tasks_of(count):
    ops = []
    for index in range(count):
        kind = index % 10
        if kind < 6:
            ops.append({"id": f"t{index}", "op": "echo", "input": {"n": index, "text": "soak" * 4}})
        elif kind < 8:
            ops.append({"id": f"t{index}", "op": "hash", "input": {"algorithm": "sha256", "data": f"d{index}"}})
        elif kind == 8:
            ops.append({"id": f"t{index}", "op": "sleep", "input": {"ms": random.randint(0, 20)}})
        else:
            ops.append({"id": f"t{index}", "op": "fail", "input": {"code": "soak", "message": "on purpose"}})
    if count >= 3:
        ops[1]["depends_on"] = ["t0"]
        ops[2]["input"] = {"copy": {"$ref": "t0#/n"}}
    return ops


def sync_batch():
    size = random.choice([1, 1, 1, 10, 10, 100, 100, 1000, 10000])
    status, body = request("POST", "/batch", json.dumps({"tasks": tasks_of(size)}).encode(), [JSON])
    record("sync batch", status, body)


def stream():
    body = json.dumps({"tasks": tasks_of(random.choice([10, 100]))}).encode()
    vanish = random.random() < 0.5
    status, rest = request("POST", "/batch", body, [JSON, ("Accept", "application/x-ndjson")], read_all=not vanish)
    record("stream, vanishing mid-stream" if vanish else "stream", status, rest)


def async_job():
    tasks = [{"id": f"s{i}", "op": "sleep", "input": {"ms": random.randint(10, 100)}} for i in range(5)]
    status, body = request("POST", "/batch", json.dumps({"tasks": tasks}).encode(), [JSON, ("Prefer", "respond-async")])
    record("async job", status, body)
    if status == 202:
        job = json.loads(body)["id"]
        with lock:
            jobs[job] = "submitted"
        if random.random() < 0.3:
            status, body = request("DELETE", f"/batch/{job}")
            record("cancel job", status, body)
        else:
            status, body = request("GET", f"/batch/{job}")
            record("poll job", status, body)


def invalid():
    body, headers = random.choice([
        (b'{"tasks": [', [JSON]),
        (b'{"tasks": [{"id": "a", "op": "echo", "depends_on": ["a"]}]}', [JSON]),
        (b'{"tasks": [{"id": "a", "op": "nope"}]}', [JSON]),
        (b'{"tasks": []}', [("Content-Type", "text/plain")]),
    ])
    status, rest = request("POST", "/batch", body, headers)
    record("invalid body", status, rest)


def vanish_mid_body():
    with socket.create_connection(("127.0.0.1", PORT), timeout=10) as sock:
        body = json.dumps({"tasks": tasks_of(100)}).encode()
        sock.sendall(f"POST /batch HTTP/1.1\r\nHost: soak\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n".encode() + body[: len(body) // 2])
    record("vanishing mid-body", 499)  # nginx's code for a client that closed first


def http_tasks():
    paths = [("/slow/soak", {"ms": "150"}), ("/status/500", {}), ("/status/503", {}), ("/drop", {}),
             ("/echo/soak", {}), ("/flaky/soak", {"fail": "1"})]
    tasks = []
    for index in range(random.choice([1, 5, 20])):
        path, query = random.choice(paths)
        task = {"id": f"h{index}", "op": "http", "input": {"upstream": "up", "path": path, "query": query,
                                                            "retry": {"max_attempts": 2}}}
        if path.startswith("/slow") and random.random() < 0.5:
            task["timeout_ms"] = 50  # cancelled mid-call
        tasks.append(task)
    status, body = request("POST", "/batch", json.dumps({"tasks": tasks}).encode(), [JSON])
    record("http tasks", status, body)


SCENARIOS = [(sync_batch, 30), (stream, 10), (async_job, 10), (invalid, 10), (vanish_mid_body, 5), (http_tasks, 15)]


def worker():
    choices = [scenario for scenario, weight in SCENARIOS for _ in range(weight)]
    while not stop.is_set():
        scenario = random.choice(choices)
        try:
            scenario()
        except (OSError, ValueError) as error:
            record(scenario.__name__ + " (client error)", -1, str(error).encode())


def idle_holder():
    """Keeps IDLE_CONNECTIONS idle connections open, reopening those nginx times out."""
    held = []
    while not stop.is_set():
        held = [sock for sock in held if sock.fileno() >= 0]
        while len(held) < IDLE_CONNECTIONS and not stop.is_set():
            try:
                held.append(socket.create_connection(("127.0.0.1", PORT), timeout=5))
            except OSError:
                break
        stop.wait(10)
        alive = []
        for sock in held:
            try:
                sock.setblocking(False)
                if sock.recv(1) == b"":
                    sock.close()
                    continue
            except BlockingIOError:
                alive.append(sock)
                continue
            except OSError:
                sock.close()
                continue
            alive.append(sock)
        held = alive
    for sock in held:
        sock.close()


def fastcgi_connections():
    """Accepted connections on Fanout's socket: /proc/net/unix names the path on each."""
    with open("/proc/net/unix") as file:
        return max(0, sum(1 for line in file if line.rstrip().endswith(SOCKET_PATH)) - 1)


def sampler(started):
    while not stop.is_set():
        with open(f"/proc/{PID}/status") as file:
            fields = dict(line.split(":", 1) for line in file)
        samples.append((round(time.monotonic() - started, 1), int(fields["VmRSS"].split()[0]) / 1024,
                        len(os.listdir(f"/proc/{PID}/fd")), int(fields["Threads"]), fastcgi_connections()))
        stop.wait(SAMPLE_EVERY)


def growth(index):
    """Median of the samples just after warm-up against the median of the last tenth."""
    after_warm_up = [s[index] for s in samples if WARM_UP <= s[0] < WARM_UP + SECONDS * 0.1]
    last = [s[index] for s in samples if s[0] >= SECONDS * 0.9]
    if not after_warm_up or not last:
        return None, None, True
    baseline, final = statistics.median(after_warm_up), statistics.median(last)
    # Counts of a few dozen move by a unit or two with the load in flight at the sampling instant.
    allowed = baseline * 1.10 if index == 1 else max(baseline * 1.10, baseline + 2)
    return baseline, final, final <= allowed


def chart(path):
    names = ["resident memory (MiB)", "open descriptors", "threads", "FastCGI connections"]
    width, panel, left = 760, 120, 60
    end = max(SECONDS, samples[-1][0] if samples else 1)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{panel * 4 + 40}" '
             'font-family="sans-serif" font-size="11">',
             f'<text x="{left}" y="14">Fanout under soak ({int(SECONDS)} s); warm-up shaded</text>']
    for row, name in enumerate(names):
        top = 24 + row * panel
        values = [s[row + 1] for s in samples] or [0]
        high = max(values) * 1.15 or 1
        x = lambda t: left + (width - left - 10) * t / end
        y = lambda v: top + panel - 20 - (panel - 30) * v / high
        parts.append(f'<rect x="{left}" y="{top}" width="{x(WARM_UP) - left:.1f}" height="{panel - 20}" fill="#eee"/>')
        parts.append(f'<rect x="{left}" y="{top}" width="{width - left - 10}" height="{panel - 20}" fill="none" stroke="#999"/>')
        parts.append(f'<text x="{left + 4}" y="{top + 12}">{name}: max {max(values):.1f}</text>')
        parts.append(f'<text x="{left - 4}" y="{y(0):.1f}" text-anchor="end">0</text>')
        parts.append(f'<text x="{left - 4}" y="{y(high / 1.15) + 4:.1f}" text-anchor="end">{high / 1.15:.0f}</text>')
        points = " ".join(f"{x(s[0]):.1f},{y(s[row + 1]):.1f}" for s in samples)
        parts.append(f'<polyline points="{points}" fill="none" stroke="#1565c0" stroke-width="1.5"/>')
    parts.append(f'<text x="{width - 10}" y="{panel * 4 + 34}" text-anchor="end">seconds</text></svg>')
    with open(path, "w") as file:
        file.write("\n".join(parts))


def settle_jobs():
    """Waits for every accepted job to finish; returns the ids lost or stuck."""
    deadline = time.monotonic() + 120
    pending = set(jobs)
    finished = {}
    while pending and time.monotonic() < deadline:
        for job in list(pending):
            status, body = request("GET", f"/batch/{job}")
            if status == 200:
                state = json.loads(body)["status"]
                if state not in ("queued", "running"):
                    finished[job] = state
                    pending.discard(job)
            elif status == 404:
                finished[job] = "LOST"
                pending.discard(job)
        if pending:
            time.sleep(0.5)
    lost = [job for job, state in finished.items() if state == "LOST"] + sorted(pending)
    return lost, finished


def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, IDLE_CONNECTIONS + 4096), hard))
    started = time.monotonic()
    threads = [threading.Thread(target=sampler, args=(started,)), threading.Thread(target=idle_holder)]
    threads += [threading.Thread(target=worker) for _ in range(WORKERS)]
    for thread in threads:
        thread.start()
    while time.monotonic() - started < SECONDS:
        time.sleep(1)
    stop.set()
    for thread in threads:
        thread.join()
    lost, finished = settle_jobs()
    verdicts = {}
    for index, name in [(1, "resident memory (MiB)"), (2, "open descriptors"), (3, "threads"), (4, "FastCGI connections")]:
        baseline, final, ok = growth(index)
        verdicts[name] = {"after warm-up": baseline, "at the end": final, "ok": ok}
    requests = sum(sum(counts.values()) for counts in statuses.values())
    report = {
        "seconds": SECONDS, "requests": requests, "statuses": statuses, "unexpected_5xx": unexpected[:20],
        "jobs_accepted": len(jobs), "jobs_finished": len(finished) - len(lost), "jobs_lost": lost,
        "job_states": {state: list(finished.values()).count(state) for state in set(finished.values())},
        "growth": verdicts, "samples": samples,
    }
    report["ok"] = not unexpected and not lost and all(v["ok"] for v in verdicts.values())
    with open(os.path.join(OUTPUT, "soak.json"), "w") as file:
        json.dump(report, file, indent=1)
    chart(os.path.join(OUTPUT, "soak.svg"))
    summary = {key: value for key, value in report.items() if key != "samples"}
    print(json.dumps(summary, indent=1))
    sys.exit(0 if report["ok"] else 1)


main()
