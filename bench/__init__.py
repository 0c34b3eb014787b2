"""Benchmarks of the webhook: `python3 -m bench` (latency, throughput, memory against the floor of our stack)."""
