"""Benchmarks behind ``make bench``: scale (scoring vs catalogue size), training stages
(time and memory vs events), and the one report that gathers every bench's figures.
Never part of ``make test``: timings on a shared machine are for reading, not gating."""
