"""Fault and soak benchmark (issue 16, item 8): ``python -m benchmarks.faults.run``."""
