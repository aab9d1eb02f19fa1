"""Scale benchmarks (not collected by the default test run: see tests/perf/bench.py)."""
