"""`make bench-regression`: the current Fanout against a reference build of it, on w1 and w2.

Both run behind the same nginx configuration, in interleaved rounds (reference then current, then
current then reference, …), and the report is the median of each and their ratio: what a change
costs on the hot path, measured in one invocation since absolute figures drift on these machines.
The responder's CPU per request is bench.wrk's (from /proc, over the requests wrk counted).

Usage: regression.py REFERENCE_BINARY CURRENT_BINARY [ROUNDS]   (BENCH_DURATION, default 8s)
"""
import pathlib
import statistics
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import bench  # noqa: E402


def main():
    reference, current = sys.argv[1], sys.argv[2]
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    workloads = ["w1", "w2"]
    results = {name: {w: [] for w in workloads} for name in ("reference", "current")}
    with tempfile.TemporaryDirectory(prefix="bench-regression-") as workdir:
        for round_index in range(rounds):
            # Alternating which goes first (ABBA): the machine often slows within a round, which
            # otherwise always counts against the second.
            order = [("reference", reference), ("current", current)]
            for name, binary in order if round_index % 2 == 0 else reversed(order):
                stack = bench.Stack("fanout", binary, workdir)
                stack.start()
                try:
                    for workload in workloads:
                        _, body, threads, connections = bench.WORKLOADS[workload]
                        figures = bench.wrk(stack.port, body, threads, connections, stack.dir,
                                            pids=stack.responder_pids)
                        results[name][workload].append(figures)
                        print(f"round {round_index + 1} {name:9} {workload}: {figures['rps']:.0f} req/s, "
                              f"p99 {figures['p99']:.2f} ms, responder CPU {figures['cpu_us']:.1f} µs/request",
                              flush=True)
                finally:
                    stack.stop()
    print(f"\nCPU: {bench.cpu_model()}; {rounds} interleaved rounds of {bench.DURATION}; medians")
    print("| workload | reference req/s | current req/s | current / reference | reference p99 ms | current p99 ms "
          "| reference CPU µs/req | current CPU µs/req | CPU current / reference |")
    print("|---|---|---|---|---|---|---|---|---|")
    for workload in workloads:
        ref = statistics.median(f["rps"] for f in results["reference"][workload])
        cur = statistics.median(f["rps"] for f in results["current"][workload])
        ref_p99 = statistics.median(f["p99"] for f in results["reference"][workload])
        cur_p99 = statistics.median(f["p99"] for f in results["current"][workload])
        ref_cpu = statistics.median(f["cpu_us"] for f in results["reference"][workload])
        cur_cpu = statistics.median(f["cpu_us"] for f in results["current"][workload])
        print(f"| {workload} | {ref:,.0f} | {cur:,.0f} | {cur / ref:.3f} | {ref_p99:.2f} | {cur_p99:.2f} "
              f"| {ref_cpu:.1f} | {cur_cpu:.1f} | {cur_cpu / ref_cpu:.3f} |")


if __name__ == "__main__":
    main()
