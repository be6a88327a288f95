"""Per-model profiler and compiler: build each model for each accelerator, benchmark it on a real
Triton, and write the ``profiles/*.yaml`` the router reads (``python -m profiler --help``)."""
