"""The whole local platform on 127.0.0.1, for people and for the end-to-end tests: Triton pools
(``fleet``), Envoy (``xds_server``), the control server (``python -m control serve``, its own
process) and Prometheus, started and stopped together; plus the demo.

It is the top of the runtime packages: it may import every one of them, and none imports it.
"""
