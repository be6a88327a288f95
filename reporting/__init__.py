"""Turn a recorded load run (per-request records, control-plane samples, Triton counters) into the
SLA / traffic / cost report, its plots and its page.  Pure functions over the recorded files, so
the same code reports the demo, the benchmark and a golden test run without a platform."""
