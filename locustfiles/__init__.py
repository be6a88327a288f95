"""Locust workloads for the local platform (see ``mixed_tiers.py``, the locustfile)."""
