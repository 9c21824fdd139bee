#!/usr/bin/env python3
"""`make bench-jobs`: the asynchronous job path, on PostgreSQL (three hosts) and on SQLite.

Usage: jobs.py FANOUT_BINARY OUTPUT_DIR DATABASE_SERVER_URL PG_BIN_DIR PG_DATA_DIR SECONDS

Measures, each in its own phase (PostgreSQL with fsync on, on a Unix socket):
1. durable single-job submissions per second through nginx over three hosts (wrk), with p50/p99,
   and the dead-row ratio of the jobs table sampled every 5 s meanwhile;
2. claim-and-complete rate: jobs of one echo task queued beforehand, run by the three hosts;
3. submit-to-start latency (the job's started_at - created_at) on the host that accepted the job,
   and on another host (the accepting one runs no jobs: FANOUT_MAX_RUNNING_JOBS=0);
4. the SQLite store's durable submissions per second with group commit, one host.
pg_test_fsync's fdatasync figure is reported alongside: a commit costs at least one flush.
Writes its section into OUTPUT_DIR/BENCHMARKS.md between <!-- jobs --> markers.
"""
import http.server
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.parse

BINARY, OUTPUT, SERVER_URL, PG_BIN, PG_DATA, SECONDS = sys.argv[1:7]
SECONDS = int(SECONDS)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = os.path.join(ROOT, ".run", "bench-jobs")
os.makedirs(RUN, exist_ok=True)
CONNECTIONS = 32
HOSTS = 3


def log(text):
    print("==> " + text, file=sys.stderr, flush=True)


def database_url(name):
    parts = urllib.parse.urlsplit(SERVER_URL)
    return urllib.parse.urlunsplit(parts._replace(path="/" + name))


def psql(name, sql):
    out = subprocess.run(["psql", database_url(name), "-tAqc", sql], capture_output=True, text=True, check=True)
    return out.stdout.strip()


sys.path.insert(0, os.path.join(ROOT, "scripts"))
from cluster import Cluster  # noqa: E402


def start_hosts(environments):
    """The hosts of one phase: quiet, and with no limit on pending jobs."""
    return Cluster(BINARY, RUN, environments,
                 base_env={"FANOUT_LOG_LEVEL": "warning", "FANOUT_MAX_PENDING_JOBS": "10000000"})


def wrk_submissions(port, seconds, connections):
    script = os.path.join(ROOT, "bench", "jobs-submit.lua")
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", script, f"http://127.0.0.1:{port}/batch"],
        capture_output=True, text=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def ms(label):
        m = re.search(rf"\s{label}%\s+([\d.]+)(us|ms|s)", out)
        value = float(m.group(1))
        return {"us": value / 1000, "ms": value, "s": value * 1000}[m.group(2)]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rate": rate, "p50_ms": ms("50"), "p99_ms": ms("99"), "non_2xx": int(errors.group(1)) if errors else 0}


def fdatasync_rate():
    path = os.path.join(PG_DATA, "fsync-test")
    out = subprocess.run([os.path.join(PG_BIN, "pg_test_fsync"), "-s", "2", "-f", path],
                         capture_output=True, text=True).stdout
    try:
        os.unlink(path)
    except OSError:
        pass
    m = re.search(r"fdatasync\s+([\d.]+) ops/sec\s+(\d+) usecs/op", out)
    return (float(m.group(1)), int(m.group(2))) if m else (0.0, 0)


def cpu_by_program():
    """CPU seconds used so far by each program (postgres, fanout, nginx, wrk), from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    totals = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)
            name = fields[0].split("(", 1)[1]
            rest = fields[1].split()
            used = (int(rest[11]) + int(rest[12])) / ticks
        except (OSError, IndexError, ValueError):
            continue
        for program in ("postgres", "fanout", "nginx", "wrk"):
            if name.startswith(program):
                totals[program] = totals.get(program, 0.0) + used
    return totals


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))] if values else 0.0


def main():
    results = {}
    log("pg_test_fsync")
    results["fdatasync_ops"], results["fdatasync_us"] = fdatasync_rate()

    # 1. Submissions over three hosts, dead rows sampled meanwhile.
    psql("postgres", "DROP DATABASE IF EXISTS bench_jobs")
    psql("postgres", "CREATE DATABASE bench_jobs")
    pg = {"FANOUT_DATABASE_URL": database_url("bench_jobs")}
    cluster = start_hosts([dict(pg, FANOUT_MAX_RUNNING_JOBS="8") for _ in range(HOSTS)])
    log(f"PostgreSQL: submissions through nginx over {HOSTS} hosts, {SECONDS} s, {CONNECTIONS} connections")
    samples = []
    outcome = {}
    cpu_before, wall_before, children_before = cpu_by_program(), time.time(), os.times()
    thread = threading.Thread(target=lambda: outcome.update(wrk_submissions(cluster.port, SECONDS, CONNECTIONS)))
    thread.start()
    while thread.is_alive():
        time.sleep(5)
        row = psql("bench_jobs", "SELECT n_live_tup, n_dead_tup FROM pg_stat_user_tables WHERE relname = 'fanout_jobs'")
        if row:
            live, dead = (int(x) for x in row.split("|"))
            samples.append((live, dead))
    thread.join()
    cpu_after, wall, children_after = cpu_by_program(), time.time() - wall_before, os.times()
    # Share of the machine's cores each program used during the phase. wrk has ended by now: its
    # share is what this script's finished children used (wrk, and psql's samples).
    results["cpu_share"] = {
        program: (cpu_after.get(program, 0.0) - cpu_before.get(program, 0.0)) / (wall * os.cpu_count())
        for program in ("postgres", "fanout", "nginx")}
    children = (children_after.children_user + children_after.children_system
                - children_before.children_user - children_before.children_system)
    results["cpu_share"]["wrk"] = children / (wall * os.cpu_count())
    results["pg_submit"] = outcome
    ratios = [dead / live for live, dead in samples if live > 1000]
    results["dead_ratio_max"] = max(ratios) if ratios else 0.0
    results["dead_ratio_last"] = ratios[-1] if ratios else 0.0
    results["dead_samples"] = len(ratios)
    results["pg_jobs"] = int(psql("bench_jobs", "SELECT count(*) FROM fanout_jobs"))
    cluster.stop()

    # 2. Claim and complete: no-op jobs queued beforehand, run by three hosts.
    count = max(2_000, min(30_000, SECONDS * 500))
    log(f"PostgreSQL: claim-and-complete of {count} queued no-op jobs by {HOSTS} hosts")
    psql("bench_jobs", "TRUNCATE fanout_jobs; TRUNCATE fanout_hosts")
    body = '{"tasks":[{"id":"a","op":"echo","input":1}]}'
    psql("bench_jobs", f"""INSERT INTO fanout_jobs (id, status, body, body_hash, task_count, created_at)
        SELECT md5(n::text), 'queued', convert_to('{body}', 'UTF8'), '', 1, n FROM generate_series(1, {count}) AS n""")
    psql("bench_jobs", "VACUUM ANALYZE fanout_jobs")
    start = time.time()
    cluster = start_hosts([dict(pg, FANOUT_MAX_RUNNING_JOBS="64") for _ in range(HOSTS)])
    ready = time.time()
    deadline = ready + 300
    while time.time() < deadline:
        left = int(psql("bench_jobs", "SELECT count(*) FROM fanout_jobs WHERE status IN ('queued', 'running')"))
        if left == 0:
            break
        time.sleep(0.05)
    finished = float(psql("bench_jobs", "SELECT max(finished_at) - min(started_at) FROM fanout_jobs"))
    results["claim_rate"] = count / finished if finished > 0 else 0.0
    results["claim_count"] = count
    results["claim_twice"] = int(psql("bench_jobs", "SELECT count(*) FROM fanout_jobs WHERE claims <> 1"))
    cluster.stop()

    # 3. Submit-to-start: from the client sending the POST to the job's first task reaching an
    # upstream served here (the same clock), on the accepting host and on another (host 0 runs
    # no jobs). It includes the http task's own call, so it slightly overstates the start.
    log("PostgreSQL: submit-to-start latency, same host and another host")
    psql("bench_jobs", "TRUNCATE fanout_jobs; TRUNCATE fanout_hosts")
    marks = {}

    class Mark(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            marks[self.path.rsplit("/", 1)[-1]] = time.time()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    upstream = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Mark)
    upstream.daemon_threads = True
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    marked = dict(pg, FANOUT_UPSTREAMS=f"mark=http://127.0.0.1:{upstream.server_address[1]}")
    cluster = start_hosts([dict(marked, FANOUT_MAX_RUNNING_JOBS="0")] + [dict(marked, FANOUT_MAX_RUNNING_JOBS="8")] * 2)
    time.sleep(0.5)
    latencies = {}
    samples_per_side = max(50, min(500, SECONDS * 5))
    # "sync": the same task in a synchronous batch, the reference: what reaching the upstream
    # costs without any job machinery.
    for label, host, prefer in (("sync", 1, {}), ("same", 1, {"Prefer": "respond-async"}),
                                ("other", 0, {"Prefer": "respond-async"})):
        sent = {}
        for n in range(samples_per_side + 10):
            token = f"{label}{n}"
            job = {"tasks": [{"id": "a", "op": "http", "input": {"upstream": "mark", "path": f"/mark/{token}"}}]}
            started = time.time()
            status, _ = cluster.call("POST", f"/host{host}/batch", job, prefer)
            if status in (200, 202) and n >= 10:  # the first ten open the upstream connections
                sent[token] = started
            time.sleep(0.01)
        time.sleep(1)
        values = [(marks[t] - started) * 1000 for t, started in sent.items() if t in marks]
        latencies[label] = {"n": len(values), "p50_ms": percentile(values, 50), "p99_ms": percentile(values, 99)}
    results["latency"] = latencies
    cluster.stop()
    upstream.shutdown()

    # 4. SQLite, one host, the same load.
    log(f"SQLite: submissions through nginx, one host, {SECONDS} s, {CONNECTIONS} connections")
    data = os.path.join(RUN, "sqlite-data")
    subprocess.run(["rm", "-rf", data])
    cluster = start_hosts([{"FANOUT_DATA_DIR": data, "FANOUT_MAX_RUNNING_JOBS": "8"}])
    results["sqlite_submit"] = wrk_submissions(cluster.port, SECONDS, CONNECTIONS)
    cluster.stop()

    write(results)


def write(r):
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    pg, sq, lat = r["pg_submit"], r["sqlite_submit"], r["latency"]

    def verdict(ok):
        return "met" if ok else "**missed**"

    lines = [
        "<!-- jobs -->",
        "## Asynchronous jobs (`make bench-jobs`)",
        "",
        f"{time.strftime('%Y-%m-%d', time.gmtime())}, {cpu}, {os.cpu_count()} cores; release build; PostgreSQL "
        f"{psql('postgres', 'SHOW server_version')} with fsync on, on a Unix socket, on the same machine; "
        f"{SECONDS} s per load phase; wrk with {CONNECTIONS} connections, jobs of one echo task.",
        f"pg_test_fsync on this disk: fdatasync {r['fdatasync_ops']:,.0f} ops/s ({r['fdatasync_us']} µs per flush).",
        "",
        "| measure | result | goal | |",
        "|---|---|---|---|",
        f"| PostgreSQL, 3 hosts: durable submissions/s through nginx | {pg['rate']:,.0f}/s (p50 {pg['p50_ms']:.2f} ms, "
        f"p99 {pg['p99_ms']:.2f} ms, non-2xx {pg['non_2xx']}) | ≥ 8,000/s, p99 ≤ 10 ms | "
        f"{verdict(pg['rate'] >= 8000 and pg['p99_ms'] <= 10)} |",
        f"| submit-to-start (POST sent → first task at an upstream), same host | p50 {lat['same']['p50_ms']:.2f} ms, "
        f"p99 {lat['same']['p99_ms']:.2f} ms ({lat['same']['n']} jobs); the same task in a synchronous batch: p50 "
        f"{lat['sync']['p50_ms']:.2f} ms, so the job path adds {lat['same']['p50_ms'] - lat['sync']['p50_ms']:.2f} ms "
        f"| p50 ≤ 1 ms | {verdict(lat['same']['p50_ms'] <= 1)} (job path alone: "
        f"{verdict(lat['same']['p50_ms'] - lat['sync']['p50_ms'] <= 1)}) |",
        f"| submit-to-start, another host (the accepting host runs no jobs) | p50 {lat['other']['p50_ms']:.2f} ms, p99 {lat['other']['p99_ms']:.2f} ms "
        f"({lat['other']['n']} jobs) | p50 ≤ 5 ms, p99 ≤ 25 ms | "
        f"{verdict(lat['other']['p50_ms'] <= 5 and lat['other']['p99_ms'] <= 25)} |",
        f"| claim-and-complete, 3 hosts × 64 slots | {r['claim_rate']:,.0f} jobs/s ({r['claim_count']:,} jobs; "
        f"claimed more than once: {r['claim_twice']}) | ≥ 10,000/s | {verdict(r['claim_rate'] >= 10000)} |",
        f"| dead rows / live rows in the jobs table during the submission phase (every 5 s) | max "
        f"{r['dead_ratio_max']:.1%}, last {r['dead_ratio_last']:.1%} ({r['dead_samples']} samples, {r['pg_jobs']:,} "
        f"jobs; autovacuum_naptime 5 s) | < 20% | {verdict(r['dead_ratio_max'] < 0.2)} |",
        f"| SQLite, 1 host: durable submissions/s through nginx | {sq['rate']:,.0f}/s (p50 {sq['p50_ms']:.2f} ms, "
        f"p99 {sq['p99_ms']:.2f} ms, non-2xx {sq['non_2xx']}) | ≥ 3,000/s | {verdict(sq['rate'] >= 3000)} |",
        "",
        "During the PostgreSQL submission phase the machine's CPU went to: "
        + ", ".join(f"{program} {share:.0%}" for program, share in r["cpu_share"].items())
        + " (of all cores): CPU, not the disk's flush rate, is what limits these figures here.",
        "",
        "<!-- /jobs -->",
    ]
    section = "\n".join(lines)
    path = os.path.join(OUTPUT, "BENCHMARKS.md")
    text = open(path).read() if os.path.exists(path) else ""
    if "<!-- jobs -->" in text:
        text = re.sub(r"<!-- jobs -->.*?<!-- /jobs -->", lambda _: section, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    os.makedirs(OUTPUT, exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    print(section)
    with open(os.path.join(RUN, "results.json"), "w") as f:
        json.dump(r, f, indent=2)


if __name__ == "__main__":
    main()
