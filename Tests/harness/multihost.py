#!/usr/bin/env python3
"""Three Fanout hosts sharing one PostgreSQL job store behind one nginx, with hosts killed mid-run.

Usage: multihost.py FANOUT_BINARY RUN_DIR DATABASE_URL [SECONDS]

Each "host" is a Fanout process with its own socket, started by spawn-fcgi; nginx balances over
the three (and /hostN/... reaches host N alone). Jobs are submitted round-robin under load; each
runs a sleep, then an `http` task against a counting upstream served here, with a token only that
job uses. Meanwhile a host is SIGKILLed several times and restarted. Checked at the end:

- every acknowledged (202) job reaches exactly one final state (none lost);
- no task ran twice: the upstream saw each token at most once, and exactly once for a job that
  succeeded;
- a killed host's running jobs were reported `interrupted` within 2 s of the kill;
- a DELETE sent to one host cancels a job running on another.

Prints one line per finding and a JSON summary; exits 1 when a check fails. Loops are bounded.
"""
import calendar
import http.server
import json
import os
import random
import signal
import sys
import threading
import time

BINARY, RUN_DIR, DATABASE_URL = sys.argv[1], sys.argv[2], sys.argv[3]
SECONDS = float(sys.argv[4]) if len(sys.argv) > 4 else 20
HOSTS = 3
KILLS = 3

# ---- the counting upstream -------------------------------------------------------------------
hits: dict[str, int] = {}
hits_lock = threading.Lock()


class Counter(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        token = self.path.rsplit("/", 1)[-1]
        with hits_lock:
            hits[token] = hits.get(token, 0) + 1
        body = json.dumps({"token": token}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


upstream = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Counter)
upstream.daemon_threads = True
threading.Thread(target=upstream.serve_forever, daemon=True).start()

# ---- hosts ----------------------------------------------------------------------------------
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts"))
from cluster import Cluster  # noqa: E402

# ---- the run ---------------------------------------------------------------------------------
failures: list[str] = []


def check(ok: bool, what: str) -> None:
    print(("  ok    " if ok else "  FAIL  ") + what, flush=True)
    if not ok:
        failures.append(what)


cluster = Cluster(BINARY, RUN_DIR, [{}] * HOSTS, base_env={
    "FANOUT_DATABASE_URL": DATABASE_URL,
    "FANOUT_UPSTREAMS": f"count=http://127.0.0.1:{upstream.server_address[1]}",
    "FANOUT_MAX_RUNNING_JOBS": "16",
    "FANOUT_LOG_LEVEL": "notice",
    "FANOUT_SHUTDOWN_GRACE_SECONDS": "5",
})
call = cluster.call

accepted: dict[str, str] = {}  # job id -> token
accepted_lock = threading.Lock()
kills: list[tuple[float, int]] = []  # (time.time() of the kill, host)
stop = threading.Event()
submit_errors = {"non_202": 0}


def submitter(n: int) -> None:
    counter = 0
    while not stop.is_set():
        counter += 1
        token = f"t{n}x{counter}x{random.randrange(1 << 30)}"
        batch = {"tasks": [
            {"id": "wait", "op": "sleep", "input": {"ms": random.choice([200, 600, 1500])}},
            {"id": "call", "op": "http", "depends_on": ["wait"],
             "input": {"upstream": "count", "method": "GET", "path": f"/hit/{token}"}},
        ]}
        host = f"/host{counter % HOSTS}" if counter % 2 else ""
        try:
            status, doc = call("POST", f"{host}/batch", batch, {"Prefer": "respond-async"})
        except OSError:
            continue
        if status == 202 and doc and "id" in doc:
            with accepted_lock:
                accepted[doc["id"]] = token
        else:
            submit_errors["non_202"] += 1
        # About 20 jobs a second in all: within what 3 hosts of 16 slots run, so that the
        # backlog stays short and every job ends soon after the run.
        time.sleep(0.3)


threads = [threading.Thread(target=submitter, args=(n,)) for n in range(6)]
for t in threads:
    t.start()

# SIGKILL a host KILLS times, spread over the run; restart each a second later.
start = time.time()
for k in range(KILLS):
    time.sleep(SECONDS / (KILLS + 1))
    victim = random.randrange(HOSTS)
    cluster.procs[victim].send_signal(signal.SIGKILL)
    cluster.procs[victim].wait()
    kills.append((time.time(), victim))
    print(f"  ..    killed host {victim} at +{time.time() - start:.1f}s", flush=True)
    time.sleep(1)
    cluster.restart(victim)
time.sleep(max(0, SECONDS - (time.time() - start)))
stop.set()
for t in threads:
    t.join()

# Every acknowledged job ends in exactly one final state.
final = {}
deadline = time.time() + 90
pending = set(accepted)
while pending and time.time() < deadline:
    for job_id in list(pending):
        status, doc = call("GET", f"/batch/{job_id}")
        if status == 200 and doc["status"] not in ("queued", "running"):
            final[job_id] = doc
            pending.discard(job_id)
    if pending:
        time.sleep(0.2)
check(not pending, f"all {len(accepted)} acknowledged jobs reached a final state ({len(pending)} did not)")

states: dict[str, int] = {}
for doc in final.values():
    key = doc["status"] + (":" + doc["error"]["code"] if doc.get("error") else "")
    states[key] = states.get(key, 0) + 1
print(f"  ..    final states: {states}", flush=True)
allowed = {"succeeded", "failed:interrupted"}
check(set(states) <= allowed, f"only succeeded or interrupted jobs ({sorted(set(states) - allowed)} otherwise)")

# A job's final state does not change: read again, through another host.
changed = 0
for job_id, doc in list(final.items())[:200]:
    status, again = call("GET", f"/host{random.randrange(HOSTS)}/batch/{job_id}")
    if status != 200 or again["status"] != doc["status"] or again.get("finished_at") != doc.get("finished_at"):
        changed += 1
check(changed == 0, f"final states are final: {changed} of {min(200, len(final))} read again differed")

# No task ran twice.
with hits_lock:
    twice = [t for t, c in hits.items() if c > 1]
    succeeded_without_hit = [i for i, d in final.items() if d["status"] == "succeeded" and hits.get(accepted[i]) != 1]
check(not twice, f"no http task ran twice ({len(twice)} tokens hit more than once; {len(hits)} hits)")
check(not succeeded_without_hit, f"every succeeded job called the upstream exactly once ({len(succeeded_without_hit)} did not)")

# Interrupted within 2 s of the kill that caused it.
lags = []
for doc in final.values():
    if doc.get("error", {}) and doc["error"].get("code") == "interrupted":
        finished = calendar.timegm(time.strptime(doc["finished_at"][:19], "%Y-%m-%dT%H:%M:%S"))
        finished += float("0." + doc["finished_at"][20:23])
        before = [t for t, _ in kills if t <= finished + 0.05]
        if before:
            lags.append(finished - before[-1])
interrupted = sum(1 for d in final.values() if d.get("error", {}) and d["error"].get("code") == "interrupted")
worst = max(lags) if lags else 0.0
check(interrupted > 0, f"some jobs were running on a killed host ({interrupted} interrupted)")
check(worst <= 2.0, f"a killed host's running jobs were reported interrupted within 2 s (worst {worst:.2f} s)")

# DELETE on one host cancels a job running on another.
status, doc = call("POST", "/host0/batch", {"tasks": [{"id": "long", "op": "sleep", "input": {"ms": 30000}}]},
                   {"Prefer": "respond-async"})
job_id = doc["id"] if status == 202 else None
running = False
for _ in range(100):
    status, doc = call("GET", f"/host0/batch/{job_id}")
    if doc and doc["status"] == "running":
        running = True
        break
    time.sleep(0.05)
t0 = time.time()
status, doc = call("DELETE", f"/host1/batch/{job_id}")
elapsed = time.time() - t0
# Which host runs it does not matter: it is not host 1's own doing unless host 1 runs it.
check(running and status == 200 and doc["status"] == "cancelled" and elapsed < 1.5,
      f"DELETE through host 1 stopped the job running elsewhere in {elapsed * 1000:.0f} ms (status {status}, {doc and doc.get('status')})")

summary = {
    "accepted": len(accepted), "final_states": states, "upstream_hits": len(hits), "kills": len(kills),
    "worst_interrupt_lag_s": round(worst, 3), "submissions_refused": submit_errors["non_202"],
}
print("  ..    " + json.dumps(summary), flush=True)

cluster.stop()
upstream.shutdown()
sys.exit(1 if failures else 0)
