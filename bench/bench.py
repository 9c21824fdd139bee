"""`make bench`: Fanout against the FastCGI floor and a Node.js peer, measured in one run.

Each target runs in turn on loopback: Fanout behind nginx (1 worker) with its default
configuration, the C libfcgi floor behind the same nginx, and the Node.js peer on its own port.
wrk (2 threads) drives the workloads; the report gives each figure and its ratio to the floor
and to the peer of the same run, since absolute figures drift between runs on these machines.

Usage: bench.py FANOUT_BINARY FLOOR_BINARY OUTPUT_DIR   (BENCH_SMOKE=1: a short run for CI)
"""
import collections
import datetime
import http.client
import json
import os
import pathlib
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
SMOKE = os.environ.get("BENCH_SMOKE") == "1"
DURATION = os.environ.get("BENCH_DURATION", "1s" if SMOKE else "8s")
# The smoke run's sub-request workloads: on its debug build, a w7 batch took 0.5 to 3 s.
SMOKE_SUBREQUEST_DURATION = "5s"
SWEEP = [1, 10, 100, 1000] if SMOKE else [1, 10, 100, 1000, 10000, 100000]
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "1" if SMOKE else "3"))
# Seconds idle before reading the resident size after a full run: longer than Fanout's heap
# trimming period (5 s).
SETTLE_SECONDS = 6


def batch(tasks):
    return json.dumps({"tasks": tasks}, separators=(",", ":"))


def echoes(count):
    return batch([{"id": f"t{i}", "op": "echo", "input": {"n": i}} for i in range(count)])


def sleeps(count, ms):
    return batch([{"id": f"s{i}", "op": "sleep", "input": {"ms": ms}} for i in range(count)])


def calls(count, upstream):
    return batch([{"id": f"h{i}", "op": "http", "input": {"upstream": upstream, "path": f"/{upstream}/{i}"}}
                  for i in range(count)])


# name: (description, body, wrk threads, connections, latency focus)
WORKLOADS = {
    "w1": ("one echo task", echoes(1), 2, 32),
    "w2": ("100 echo tasks", echoes(100), 2, 32),
    "w3": ("100 sleeps of 50 ms", sleeps(100, 50), 2, 32),
    "w4": ("one batch of 10,000 echo tasks, one request at a time", echoes(10000), 1, 1),
    "w5": ("256 connections, batches of 10 sleeps of 200 ms", sleeps(10, 200), 2, 256),
    "w6": ("50 GET sub-requests to a local upstream (nginx return 200)", calls(50, "fast"), 2, 32),
    "w7": ("20 GET sub-requests to an upstream answering after 100 ms", calls(20, "slow"), 2, 32),
}
# Workloads that measure work the floor does not do.
NOT_FOR_FLOOR = ("w3", "w5", "w6", "w7")
# Set by main(): the upstreams of w6 and w7, shared by Fanout and the peer.
UPSTREAMS = {}
# The floor's threads: at least nginx's 32 kept connections plus the ones being opened.
FLOOR_THREADS = 64
# Requests over which system calls are counted (w1, under strace).
SYSCALL_REQUESTS = 2000 if SMOKE else 20000


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(port, path="/batch", body='{"tasks":[{"id":"a","op":"echo"}]}'):
    for _ in range(200):
        try:
            status, _ = post(port, path, body)
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"nothing answers on port {port}")


def post(port, path, body):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.request("POST", path, body, {"Content-Type": "application/json"})
    response = connection.getresponse()
    data = response.read()
    connection.close()
    return response.status, data


def peak_rss_kib(pids):
    total = 0
    for pid in pids:
        try:
            status = pathlib.Path(f"/proc/{pid}/status").read_text()
            total += int(re.search(r"VmHWM:\s+(\d+)", status).group(1))
        except (OSError, AttributeError):
            pass
    return total


def rss_kib(pid):
    status = pathlib.Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1))


def children(pid):
    try:
        return [int(p) for p in pathlib.Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


class Stack:
    """A responder (under spawn-fcgi) behind nginx, or the peer alone."""

    def __init__(self, kind, binary, workdir):
        self.kind, self.binary = kind, binary
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix=f"bench-{kind}-", dir=workdir))
        self.processes = []
        self.port = free_port()

    def start(self):
        log = open(self.dir / "responder.log", "w")
        if self.kind == "peer":
            # As many connections per upstream as Fanout's (64 for fast over 2 workers; enough for slow).
            responder = subprocess.Popen(
                ["node", str(ROOT / "bench" / "peer.js")],
                env={**os.environ, "PORT": str(self.port), "MAX_SOCKETS_FAST": "32", "MAX_SOCKETS_SLOW": "1024",
                     "UPSTREAMS": ",".join(f"{name}={url}" for name, url in UPSTREAMS.items())},
                stdout=log, stderr=log)
            self.processes.append(responder)
        else:
            socket_path = self.dir / "fcgi.sock"
            env = {**os.environ, "FANOUT_LOG_LEVEL": os.environ.get("FANOUT_LOG_LEVEL", "info"),
                   "FLOOR_THREADS": str(FLOOR_THREADS)}
            if UPSTREAMS:
                upstreams_file = self.dir / "upstreams.json"
                upstreams_file.write_text(json.dumps({
                    "fast": {"url": UPSTREAMS["fast"], "max_connections": 64},
                    "slow": {"url": UPSTREAMS["slow"], "max_connections": 1024}}))
                env["FANOUT_UPSTREAMS_FILE"] = str(upstreams_file)
            responder = subprocess.Popen(
                ["spawn-fcgi", "-s", str(socket_path), "-M", "0660", "-n", "--", self.binary],
                stdout=subprocess.DEVNULL, stderr=log, env=env)
            self.processes.append(responder)
            for _ in range(100):
                if socket_path.exists():
                    break
                time.sleep(0.05)
            template = (ROOT / "nginx" / "fanout-local.conf.template").read_text()
            # Both behind the same nginx, keeping up to 32 connections: Fanout with its default
            # configuration, the floor at its strongest (FLOOR_THREADS threads, more than the kept
            # connections, each of which pins one of its threads).
            values = {
                "RUN_DIR": str(self.dir), "SOCKET": str(socket_path), "PORT": str(self.port),
                "FANOUT_PARAMS": str(ROOT / "nginx" / "fanout_params"),
                "KEEP_CONN": "on", "KEEPALIVE_LINE": "keepalive 32;",
                "USER_LINE": "user root;" if os.getuid() == 0 else "",
                "MAX_BODY_BYTES": "8388608", "READ_TIMEOUT": "75s", "CLIENT_MAP": "", "CLIENT_PARAMS": "",
            }
            for key, value in values.items():
                template = template.replace(f"@{key}@", value)
            (self.dir / "nginx.conf").write_text(template)
            nginx = shutil.which("nginx") or "/usr/sbin/nginx"
            self.processes.append(subprocess.Popen(
                [nginx, "-p", str(self.dir), "-c", str(self.dir / "nginx.conf"), "-e", "stderr"],
                stdout=log, stderr=log))
        wait_for(self.port)

    @property
    def responder_pids(self):
        pid = self.processes[0].pid
        return [pid] + children(pid)

    def stop(self):
        for process in reversed(self.processes):
            process.send_signal(signal.SIGTERM if process is self.processes[0] else signal.SIGQUIT)
            try:
                process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                process.kill()


def cpu_seconds(pids):
    """User plus system CPU time of the processes (all their threads), from /proc."""
    total = 0
    for pid in pids:
        try:
            fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def wrk(port, body, threads, connections, workdir, pids=(), duration=None, limit=None):
    """Runs wrk; with `pids`, adds the CPU those processes spent per request (µs, from /proc).

    With `limit`, each wrk thread stops after limit / threads responses (for counting system
    calls over a fixed number of requests).
    """
    script = pathlib.Path(workdir) / "request.lua"
    (pathlib.Path(workdir) / "body.json").write_text(body)
    lua = (f'local f = io.open("{workdir}/body.json"); local body = f:read("*a"); f:close()\n'
           'wrk.method = "POST"; wrk.body = body; wrk.headers["Content-Type"] = "application/json"\n')
    if limit:
        lua += (f'local seen = 0\nfunction response() seen = seen + 1; '
                f'if seen >= {limit // threads} then wrk.thread:stop() end end\n')
    script.write_text(lua)
    before = cpu_seconds(pids)
    output = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration or DURATION}", "--timeout", "10s", "--latency",
         "-s", str(script), f"http://127.0.0.1:{port}/batch"],
        capture_output=True, text=True, check=True).stdout
    result = parse_wrk(output)
    if pids and result["requests"]:
        result["cpu_us"] = (cpu_seconds(pids) - before) / result["requests"] * 1e6
    return result


def syscalls(stack):
    """System calls per w1 request, on a responder just started: strace on every thread over about
    SYSCALL_REQUESTS requests (wrk stops each thread after its share), divided by the requests wrk
    saw answered.

    Counted per thread (strace -ff), so that the threads that serve requests (Fanout's event loops;
    every thread of the floor) are told apart from the rest (Fanout's job store polling, timers and
    upstream client), whose calls depend on time, not on requests: strace slows the responder, so
    those would otherwise count against each request several times over. Both are reported.
    Returns {"requests", "serving", "process", "calls"} (calls: the serving threads' by name), or
    None when strace cannot trace.
    """
    _, body, threads, connections = WORKLOADS["w1"]
    directory = stack.dir / "strace"
    directory.mkdir(exist_ok=True)
    pid = stack.responder_pids[0]
    tracer = subprocess.Popen(["strace", "-f", "-ff", "-o", str(directory / "trace"), "-p", str(pid)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)  # strace attaches to every thread before the load starts
    names = {}
    for task in pathlib.Path(f"/proc/{pid}/task").iterdir():
        try:
            names[task.name] = (task / "comm").read_text().strip()
        except OSError:
            pass
    figures = wrk(stack.port, body, threads, connections, stack.dir, duration="60s", limit=SYSCALL_REQUESTS)
    tracer.send_signal(signal.SIGINT)
    tracer.wait(timeout=30)
    requests = figures["requests"]
    serving, process, calls = 0, 0, collections.Counter()
    for trace in directory.glob("trace.*"):
        tid = trace.suffix[1:]
        counted = collections.Counter(
            match.group(1) for line in trace.read_text(errors="replace").splitlines()
            if (match := re.match(r"(\w+)\(", line)))
        total = sum(counted.values())
        process += total
        if stack.kind == "floor" or names.get(tid, "").startswith("fcgi-loop"):
            serving += total
            calls.update(counted)
    if not requests or not process:
        print("  strace could not trace the responder: system calls not counted", flush=True)
        return None
    return {"requests": requests, "serving": serving / requests, "process": process / requests,
            "calls": {name: count / requests for name, count in calls.most_common()}}


def milliseconds(text):
    value, unit = re.match(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1, "s": 1000, "m": 60000}[unit]


def parse_wrk(output):
    result = {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        "p50": milliseconds(re.search(r"^\s+50%\s+(\S+)", output, re.M).group(1)),
        "p99": milliseconds(re.search(r"^\s+99%\s+(\S+)", output, re.M).group(1)),
        "max": milliseconds(re.search(r"Latency\s+\S+\s+\S+\s+(\S+)", output).group(1)),
        "non2xx": 0, "errors": 0,
        "requests": int(re.search(r"(\d+) requests in", output).group(1)),
    }
    if match := re.search(r"Non-2xx or 3xx responses: (\d+)", output):
        result["non2xx"] = int(match.group(1))
    if match := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output):
        result["errors"] = sum(int(g) for g in match.groups())
    return result


def sweep(port):
    """Median time of one batch of N echo tasks, for each N, over one kept-alive connection.

    Returns per N: the median time per task, and the marginal cost of a task,
    (t(N) - t(1)) / (N - 1), which leaves out the fixed cost of a request and so shows how the
    engine scales with the batch. For small N that difference is a few tens of microseconds
    between two times of a few hundred, so batches of N alternate with batches of 1 (both
    medians then see the same drift) and small sizes are repeated many times.
    """
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def timed(body):
        start = time.perf_counter()
        connection.request("POST", "/batch", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"sweep: status {response.status}")
        return time.perf_counter() - start

    single = echoes(1)
    for _ in range(20):
        timed(single)  # warm-up
    costs = {}
    for size in SWEEP:
        body = echoes(size)
        repeats = 5 if size >= 100000 else 25 if size >= 10000 else 201
        timed(body)  # warm-up
        singles, times = [], []
        for _ in range(repeats):
            singles.append(timed(single))
            times.append(timed(body))
        one, median = statistics.median(singles), statistics.median(times)
        costs[size] = {"per_task_us": median / size * 1e6,
                       "marginal_us": (median - one) / (size - 1) * 1e6 if size > 1 else None}
    connection.close()
    return costs


def measure(kind, binary, workdir, repeat_for_memory, count_syscalls):
    stack = Stack(kind, binary, workdir)
    stack.start()
    try:
        # First, on the responder just started: what later workloads leave running (idle upstream
        # connections closing, timers) is not part of a w1 request.
        counted = syscalls(stack) if kind != "peer" and count_syscalls else None
        figures = {}
        for name, (_, body, threads, connections) in WORKLOADS.items():
            if kind == "floor" and name in NOT_FOR_FLOOR:
                continue  # the floor does no work: a sleep or sub-request workload would measure nothing
            duration = SMOKE_SUBREQUEST_DURATION if SMOKE and name in ("w6", "w7") else None
            figures[name] = wrk(stack.port, body, threads, connections, stack.dir, pids=stack.responder_pids,
                                duration=duration)
            print(f"  {kind:6} {name}: {figures[name]['rps']:10.1f} req/s  p50 {figures[name]['p50']:8.2f} ms"
                  f"  p99 {figures[name]['p99']:8.2f} ms  CPU {figures[name].get('cpu_us', 0):8.1f} µs/request",
                  flush=True)
            if name == "w4":
                w4_peak = peak_rss_kib(stack.responder_pids)
        costs = sweep(stack.port) if kind != "floor" else {}
        memory = {"peak_kib": peak_rss_kib(stack.responder_pids), "w4_peak_kib": w4_peak}
        if kind == "fanout" and repeat_for_memory:
            # Run everything again: the responder must come back to the same size. Both sizes are
            # read once it has been idle longer than its heap trimming period (HeapTrimmer, 5 s):
            # right after a 100,000-task batch, up to 64 MiB of freed heap is still held, so a
            # reading then depends on where the trimmer's period happened to fall.
            time.sleep(SETTLE_SECONDS)
            memory["after_first_kib"] = rss_kib(stack.processes[0].pid)
            for name, (_, body, threads, connections) in WORKLOADS.items():
                wrk(stack.port, body, threads, connections, stack.dir)
            sweep(stack.port)
            time.sleep(SETTLE_SECONDS)
            memory["after_second_kib"] = rss_kib(stack.processes[0].pid)
            memory["peak_kib"] = peak_rss_kib(stack.responder_pids)
        return {"workloads": figures, "sweep": costs, "memory": memory, "syscalls": counted}
    finally:
        stack.stop()


def cpu_text(figures):
    """CPU per request, or a dash when no request completed (which only a smoke run may see)."""
    return f"{figures['cpu_us']:.1f}" if "cpu_us" in figures else "—"


def median_of(rounds):
    """Each figure's median over the rounds; memory figures from the last round, which measures them."""
    results = {}
    for kind in rounds[0]:
        runs = [r[kind] for r in rounds]
        workloads = {
            name: {metric: statistics.median(run["workloads"][name][metric] for run in runs
                                             if metric in run["workloads"][name])
                   for metric in runs[0]["workloads"][name]}
            for name in runs[0]["workloads"]
        }
        sweep = {
            size: {metric: (None if runs[0]["sweep"][size][metric] is None
                            else statistics.median(run["sweep"][size][metric] for run in runs))
                   for metric in runs[0]["sweep"][size]}
            for size in runs[0]["sweep"]
        }
        memory = dict(runs[-1]["memory"])
        memory["peak_kib"] = max(run["memory"]["peak_kib"] for run in runs)
        memory["w4_peak_kib"] = max(run["memory"]["w4_peak_kib"] for run in runs)
        results[kind] = {"workloads": workloads, "sweep": sweep, "memory": memory, "rounds": len(runs),
                         "syscalls": runs[-1]["syscalls"]}
    return results


def ratio(value, reference):
    return f"{value / reference:.2f}×" if reference else "—"


def cpu_model():
    cpu = re.search(r"model name\s*:\s*(.*)", pathlib.Path("/proc/cpuinfo").read_text())
    return cpu.group(1) if cpu else platform.machine()


def machine():
    memory = int(re.search(r"MemTotal:\s+(\d+)", pathlib.Path("/proc/meminfo").read_text()).group(1)) // 1024 // 1024
    versions = []
    for command in (["swift", "--version"], ["nginx", "-v"], ["node", "--version"]):
        try:
            out = subprocess.run(command, capture_output=True, text=True)
            versions.append((out.stdout + out.stderr).strip().splitlines()[0])
        except OSError:
            pass
    return (f"{os.cpu_count()} cores ({cpu_model()}), {memory} GiB, "
            f"Linux {platform.release()}; " + "; ".join(versions))


def targets_check(results):
    f, floor, peer = (results[k]["workloads"] for k in ("fanout", "floor", "peer"))
    sweep_costs = results["fanout"]["sweep"]
    counted = results["fanout"]["syscalls"]
    checks = [
        ("w1 ≥ 0.95 × floor requests/s", f["w1"]["rps"] >= 0.95 * floor["w1"]["rps"]),
        ("w1 p99 ≤ 1.5 × floor p99", f["w1"]["p99"] <= 1.5 * floor["w1"]["p99"]),
        ("system calls per w1 request ≤ 2.5 (the threads that serve requests)",
         counted is not None and counted["serving"] <= 2.5),
        ("w2 ≥ 1.5 × peer requests/s", f["w2"]["rps"] >= 1.5 * peer["w2"]["rps"]),
        ("w4 median latency ≤ 0.6 × peer", f["w4"]["p50"] <= 0.6 * peer["w4"]["p50"]),
    ]
    marginal = [sweep_costs[n]["marginal_us"] for n in sweep_costs if n >= 100]
    if marginal:
        checks.append(("marginal cost per task ≤ 0.5 µs from 100 to the largest batch", max(marginal) <= 0.5))
    checks += [
        ("w3 p50 ≤ 52 ms", f["w3"]["p50"] <= 52),
        ("w3 ≥ 600 requests/s", f["w3"]["rps"] >= 600),
        ("w4 responder memory < 64 MiB", results["fanout"]["memory"]["w4_peak_kib"] < 64 * 1024),
        ("w5 no errors, no 5xx", f["w5"]["errors"] == 0 and f["w5"]["non2xx"] == 0),
        ("w5 p99 < 300 ms", f["w5"]["p99"] < 300),
        ("w6 batches/s ≥ 1.2 × peer (issue 8)", f["w6"]["rps"] >= 1.2 * peer["w6"]["rps"]),
        ("w6 p99 ≤ peer p99 (issue 8)", f["w6"]["p99"] <= peer["w6"]["p99"]),
        ("w7 p50 within 10 ms of 100 ms (issue 8)", f["w7"]["p50"] <= 110),
        ("w6 and w7 without errors or non-2xx answers",
         all(f[w]["errors"] == 0 and f[w]["non2xx"] == 0 for w in ("w6", "w7"))),
    ]
    memory = results["fanout"]["memory"]
    checks.append(("memory back to its size after a second full run (within 10%)",
                   memory["after_second_kib"] <= 1.1 * memory["after_first_kib"]))
    return checks


def report(results, output):
    lines = [
        "# Benchmarks", "",
        f"Measured {datetime.date.today().isoformat()} by `make bench`{' (smoke run)' if SMOKE else ''}: "
        f"{machine()}.", "",
        f"Every figure is the median of {ROUNDS} round{'s' if ROUNDS != 1 else ''}; in each round the three targets run "
        "in turn, so that drift on the machine affects them alike. "
        f"wrk with 2 threads for {DURATION} per workload on loopback (w4: 1 thread, 1 connection); nginx with one "
        "worker in front of Fanout (its default configuration) and of the floor, both with `fastcgi_keep_conn on`, "
        "`keepalive 32` and the four FastCGI parameters Fanout reads (nginx/fanout-local.conf.template); "
        f"the floor (bench/floor.c: libfcgi's threaded API answering a fixed body) with {FLOOR_THREADS} "
        "threads, more than the kept connections, each of which pins one of its threads: its strongest configuration. "
        "The Node.js peer alone on its own port. Ratios compare with the floor and the peer measured in this same run. "
        "CPU µs/request: the responder's user + system CPU time over the workload (all its threads, from /proc; the "
        "peer's workers included), divided by the requests answered.", "",
    ]
    lines += ["| workload | target | requests/s | p50 ms | p99 ms | max ms | errors/non-2xx | CPU µs/request | "
              "req/s vs floor | req/s vs peer | p50 vs peer |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, (description, *_rest) in WORKLOADS.items():
        floor = results["floor"]["workloads"].get(name)
        peer = results["peer"]["workloads"].get(name)
        for kind in ("fanout", "floor", "peer"):
            w = results[kind]["workloads"].get(name)
            if not w:
                continue
            lines.append(
                f"| {name}: {description} | {kind} | {w['rps']:.0f} | {w['p50']:.2f} | {w['p99']:.2f} | {w['max']:.1f} | "
                f"{w['errors']}/{w['non2xx']} | {cpu_text(w)} | {ratio(w['rps'], floor['rps']) if floor else '—'} | "
                f"{ratio(w['rps'], peer['rps']) if peer else '—'} | {ratio(w['p50'], peer['p50']) if peer else '—'} |")
    lines += ["", "Cost per task as the batch grows: median time of one batch of N echo tasks over a kept-alive "
              "connection, divided by N (µs per task); and the marginal cost of a task, (t(N) − t(1)) / (N − 1), "
              "which leaves out the fixed cost of a request:", "",
              "| tasks | fanout µs/task | peer µs/task | fanout marginal µs | peer marginal µs | marginal vs peer |",
              "|---:|---:|---:|---:|---:|---:|"]
    for size in SWEEP:
        fc, pc = results["fanout"]["sweep"][size], results["peer"]["sweep"][size]
        fm, pm = fc["marginal_us"], pc["marginal_us"]
        lines.append(f"| {size} | {fc['per_task_us']:.2f} | {pc['per_task_us']:.2f} | "
                     f"{'—' if fm is None else f'{fm:.2f}'} | {'—' if pm is None else f'{pm:.2f}'} | "
                     f"{'—' if fm is None else ratio(fm, pm)} |")
    memory = results["fanout"]["memory"]
    lines += ["", f"Fanout's peak resident memory by the end of w4: {memory['w4_peak_kib'] / 1024:.1f} MiB. "
              "Peak over the whole run: " + ", ".join(
        f"{kind} {results[kind]['memory']['peak_kib'] / 1024:.1f} MiB" for kind in ("fanout", "floor", "peer"))
        + f". Fanout's resident size after a full run: {memory['after_first_kib'] / 1024:.1f} MiB; after a second "
        f"full run: {memory['after_second_kib'] / 1024:.1f} MiB (each read after {SETTLE_SECONDS} s idle, past the "
        "5 s period in which Fanout gives freed heap back).", "",
        "w6 and w7 call upstreams on loopback shared by Fanout and the peer: nginx answering `return 200` with a "
        "small JSON body (w6), and a Node.js server answering after 100 ms (w7). Fanout keeps at most 64 connections "
        "to the first (its default `max_connections`) and 1024 to the second; the peer's keep-alive agents the same "
        "(32 and 512+ per worker, 2 workers). Each sub-request's body is parsed as JSON and returned in the result.", "",
        ]
    lines += syscall_lines(results)
    lines += ["## Targets (issue 12, with those of issues 3 and 8 it keeps)", ""]
    for label, ok in targets_check(results):
        lines.append(f"- {'met' if ok else '**not met**'}: {label}")
    lines += ["", "![cost per task and requests per second](bench-results.svg)", ""]
    (output / "BENCHMARKS.md").write_text("\n".join(lines))
    (output / "bench-results.svg").write_text(chart(results))
    (output / "bench-results.json").write_text(json.dumps(results, indent=1))


def syscall_lines(results):
    lines = ["System calls per w1 request, on a responder just started (strace -f -ff, every thread, over "
             f"{SYSCALL_REQUESTS:,} requests that wrk counts; the last round). *Serving threads*: those that "
             "read, handle and answer requests (Fanout's event loops; all of the floor's). *Whole process*: "
             "Fanout's other threads too, whose calls come with time, not requests (the job store's "
             "polling every 250 ms, its heartbeat, timers); strace slows the responder several times "
             "over, so they weigh more per request here than they do untraced.", "",
             "| responder | serving threads, per request | whole process, per request | serving threads by call |",
             "|---|---:|---:|---|"]
    for kind in ("fanout", "floor"):
        counted = results[kind]["syscalls"]
        if counted:
            calls = ", ".join(f"{name} {count:.3f}" for name, count in counted["calls"].items() if count >= 0.001)
            lines.append(f"| {kind} | {counted['serving']:.2f} | {counted['process']:.2f} | {calls} |")
        else:
            lines.append(f"| {kind} | not measured (strace could not trace) | | |")
    return lines + [""]


def chart(results):
    """Two panels: µs per task against batch size (log-log), and requests/s per target per workload."""
    import math
    width, height = 900, 360
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
           'font-size="11"><rect width="100%" height="100%" fill="white"/>']
    colours = {"fanout": "#1f77b4", "floor": "#7f7f7f", "peer": "#d62728"}
    # Panel 1: sweep.
    x0, y0, w, h = 60, 40, 360, 260
    costs = [c["per_task_us"] for k in ("fanout", "peer") for c in results[k]["sweep"].values()]
    low, high = math.log10(min(costs)) - 0.2, math.log10(max(costs)) + 0.2
    sizes = SWEEP
    px = lambda i: x0 + w * i / max(1, len(sizes) - 1)
    py = lambda c: y0 + h - h * (math.log10(c) - low) / (high - low)
    svg.append(f'<text x="{x0}" y="20" font-size="13">µs per task against tasks per batch (log scale)</text>')
    svg.append(f'<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="none" stroke="#ccc"/>')
    for i, size in enumerate(sizes):
        svg.append(f'<text x="{px(i)}" y="{y0 + h + 15}" text-anchor="middle">{size:,}</text>')
    for exponent in range(math.ceil(low), math.floor(high) + 1):
        svg.append(f'<text x="{x0 - 5}" y="{py(10 ** exponent) + 4}" text-anchor="end">{10 ** exponent:g}</text>')
    for kind in ("fanout", "peer"):
        points = " ".join(f"{px(i):.1f},{py(results[kind]['sweep'][s]['per_task_us']):.1f}" for i, s in enumerate(sizes))
        svg.append(f'<polyline points="{points}" fill="none" stroke="{colours[kind]}" stroke-width="2"/>')
    # Panel 2: requests/s, bars grouped by workload, log scale.
    x0 = 500
    svg.append(f'<text x="{x0}" y="20" font-size="13">requests/s per workload (log scale)</text>')
    svg.append(f'<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="none" stroke="#ccc"/>')
    rates = [wl["rps"] for k in results for wl in results[k]["workloads"].values() if wl["rps"] > 0]
    low, high = math.log10(min(rates)) - 0.3, math.log10(max(rates)) + 0.1
    by = lambda r: y0 + h - h * (math.log10(max(r, 10 ** low)) - low) / (high - low)
    for exponent in range(math.ceil(low), math.floor(high) + 1):
        svg.append(f'<text x="{x0 - 5}" y="{by(10 ** exponent) + 4}" text-anchor="end">{10 ** exponent:g}</text>')
    group = w / len(WORKLOADS)
    for g, name in enumerate(WORKLOADS):
        svg.append(f'<text x="{x0 + group * (g + 0.5)}" y="{y0 + h + 15}" text-anchor="middle">{name}</text>')
        for b, kind in enumerate(("fanout", "floor", "peer")):
            wl = results[kind]["workloads"].get(name)
            if wl:
                bx = x0 + group * g + 8 + b * (group - 16) / 3
                svg.append(f'<rect x="{bx:.1f}" y="{by(wl["rps"]):.1f}" width="{(group - 16) / 3 - 2:.1f}" '
                           f'height="{y0 + h - by(wl["rps"]):.1f}" fill="{colours[kind]}"/>')
    for i, kind in enumerate(("fanout", "floor", "peer")):
        svg.append(f'<rect x="{60 + i * 90}" y="{height - 22}" width="12" height="12" fill="{colours[kind]}"/>'
                   f'<text x="{76 + i * 90}" y="{height - 12}">{kind}</text>')
    svg.append("</svg>")
    return "\n".join(svg)


def start_upstreams(workdir):
    """nginx answering /fast with a fixed JSON body, and the Node.js /slow upstream (100 ms)."""
    directory = pathlib.Path(tempfile.mkdtemp(prefix="upstream-", dir=workdir))
    fast, slow = free_port(), free_port()
    user = "user root;" if os.getuid() == 0 else ""
    (directory / "nginx.conf").write_text(f"""
worker_processes 1; daemon off; pid {directory}/nginx.pid; error_log stderr warn; {user}
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {directory}/cb; proxy_temp_path {directory}/p; fastcgi_temp_path {directory}/f;
    uwsgi_temp_path {directory}/u; scgi_temp_path {directory}/s;
    keepalive_requests 1000000; keepalive_timeout 120s;
    server {{
        listen 127.0.0.1:{fast};
        location / {{ default_type application/json; return 200 '{{"id":42,"name":"User 42","team_id":2}}'; }}
    }}
}}
""")
    log = open(directory / "upstream.log", "w")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    processes = [
        subprocess.Popen([nginx, "-p", str(directory), "-c", str(directory / "nginx.conf"), "-e", "stderr"],
                         stdout=log, stderr=log),
        subprocess.Popen(["node", str(ROOT / "bench" / "upstream.js")], env={**os.environ, "PORT": str(slow)},
                         stdout=log, stderr=log),
    ]
    for port in (fast, slow):
        for _ in range(200):
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                connection.request("GET", "/slow")
                connection.getresponse().read()
                connection.close()
                break
            except OSError:
                time.sleep(0.05)
    UPSTREAMS.update({"fast": f"http://127.0.0.1:{fast}", "slow": f"http://127.0.0.1:{slow}"})
    return processes


def main():
    fanout, floor, output = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3])
    output.mkdir(parents=True, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix="fanout-bench-")
    upstreams = start_upstreams(workdir)
    # Targets alternate round by round, so that drift on this shared machine hits all of them
    # alike; the report takes the median of each figure over the rounds.
    rounds = []
    for round_number in range(ROUNDS):
        rounds.append({})
        for kind, binary in (("fanout", fanout), ("floor", floor), ("peer", None)):
            print(f"round {round_number + 1}/{ROUNDS}, {kind}:", flush=True)
            last = round_number == ROUNDS - 1
            rounds[-1][kind] = measure(kind, binary, workdir, repeat_for_memory=last, count_syscalls=last)
    for process in upstreams:
        process.send_signal(signal.SIGQUIT if process is upstreams[0] else signal.SIGTERM)
        process.wait(timeout=10)
    results = median_of(rounds)
    report(results, output)
    shutil.rmtree(workdir, ignore_errors=True)
    print((output / "BENCHMARKS.md").read_text())
    # The smoke run asserts only that every figure is a number.
    figures = [w["rps"] for r in results.values() for w in r["workloads"].values()]
    return 0 if figures and all(f > 0 for f in figures) else 1


if __name__ == "__main__":
    sys.exit(main())
