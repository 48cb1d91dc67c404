"""wva benchmarks: programs that print comparable tables (``python -m bench``; see docs/benchmarks.md).

Every figure is measured next to its baseline in the same run (batched vs per-VA queries, 10 vs 1000
VAs, the NATS round-trip floor, an empty process), because the machines these run on are shared and
noisy: read the ratios and the spreads, not the absolute numbers alone.
"""
