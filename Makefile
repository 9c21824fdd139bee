# The two set-up commands of the README, plus the benchmark.
.PHONY: run test bench bench-jobs bench-regression build sanitize fuzz soak

## Serve Fanout on http://127.0.0.1:$(PORT) (default 8080) behind nginx, until Ctrl-C.
run:
	bash scripts/run.sh

## Install what is missing, build, run the unit tests and the shell harness.
test:
	bash Tests/harness/test-all.sh

## Fanout against the C libfcgi floor and a Node.js peer; writes BENCHMARKS.md (BENCH_SMOKE=1: short run).
bench:
	bash bench/run.sh

## The asynchronous job path: PostgreSQL with three hosts, and SQLite (part of make bench).
bench-jobs:
	bash bench/jobs.sh

## The unit tests under ThreadSanitizer and AddressSanitizer (SANITIZERS="thread" for one).
sanitize:
	bash scripts/sanitize.sh

## libFuzzer targets under AddressSanitizer, 10 million executions each (FUZZ_SECONDS=N: N s each).
fuzz:
	bash scripts/fuzz.sh

## Mixed load through nginx for 10 minutes (SOAK_SECONDS=N for N s); fails on growth, 5xx or a lost job.
soak:
	bash scripts/soak.sh

build:
	swift build

## The current build against a reference revision on w1 and w2 (BASE=rev, default HEAD~1): the hot path's cost.
bench-regression:
	bash bench/regression.sh
