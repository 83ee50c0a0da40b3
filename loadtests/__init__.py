"""Load and latency tests of the serving endpoints (benchmarks, never part of make test)."""
