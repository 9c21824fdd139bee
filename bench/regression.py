"""`make bench-regression`: the current Fanout against a reference build of it, on w1 and w2.

Both run behind the same nginx configuration, in interleaved rounds (reference, current,
reference, …), and the report is the median of each and their ratio: what a change costs on the
hot path, measured in one invocation since absolute figures drift on these machines.

Usage: regression.py REFERENCE_BINARY CURRENT_BINARY [ROUNDS]   (BENCH_DURATION, default 8s)
"""
import pathlib
import platform
import statistics
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import bench  # noqa: E402


def cpu_model():
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main():
    reference, current = sys.argv[1], sys.argv[2]
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    workloads = ["w1", "w2"]
    results = {name: {w: [] for w in workloads} for name in ("reference", "current")}
    with tempfile.TemporaryDirectory(prefix="bench-regression-") as workdir:
        for round_index in range(rounds):
            for name, binary in (("reference", reference), ("current", current)):
                stack = bench.Stack("fanout", binary, workdir)
                stack.start()
                try:
                    for workload in workloads:
                        _, body, threads, connections = bench.WORKLOADS[workload]
                        figures = bench.wrk(stack.port, body, threads, connections, stack.dir)
                        results[name][workload].append(figures)
                        print(f"round {round_index + 1} {name:9} {workload}: {figures['rps']:.0f} req/s, "
                              f"p99 {figures['p99']:.2f} ms", flush=True)
                finally:
                    stack.stop()
    print(f"\nCPU: {cpu_model()}; {rounds} interleaved rounds of {bench.DURATION}; medians")
    print("| workload | reference req/s | current req/s | current / reference | reference p99 ms | current p99 ms |")
    print("|---|---|---|---|---|---|")
    for workload in workloads:
        ref = statistics.median(f["rps"] for f in results["reference"][workload])
        cur = statistics.median(f["rps"] for f in results["current"][workload])
        ref_p99 = statistics.median(f["p99"] for f in results["reference"][workload])
        cur_p99 = statistics.median(f["p99"] for f in results["current"][workload])
        print(f"| {workload} | {ref:,.0f} | {cur:,.0f} | {cur / ref:.3f} | {ref_p99:.2f} | {cur_p99:.2f} |")


if __name__ == "__main__":
    main()
