"""Every port number the platform listens on, in one place (a TCP port; the control loop's I/O
boundaries are called ports too, and live in ``control.ports``).

The local platform (fleet/, xds_server/) uses these as defaults; the Kubernetes manifests, the Envoy
bootstrap and the Dockerfiles under triton_images/ repeat them because YAML cannot import Python, and
tests/deploy/test_drift.py fails when a copy disagrees with this module.
"""

from __future__ import annotations

# Triton Inference Server defaults (tritonserver --http-port/--grpc-port/--metrics-port).
TRITON_HTTP = 8000
TRITON_GRPC = 8001
TRITON_METRICS = 8002

# Envoy, the routing tier. One listener per protocol: KServe v2 REST and gRPC (codec AUTO would also
# serve both on one port; two keep the NLB's health checks and the dashboards per protocol simple).
ENVOY_HTTP = 8000
ENVOY_GRPC = 8001
ENVOY_ADMIN = 9901  # loopback only: the admin interface can stop Envoy and dump its config
# In Kubernetes, a listener that exposes only /stats/prometheus and /ready of the admin interface
# (k8s/base/envoy/bootstrap.yaml), for Prometheus and the probes.
ENVOY_PROMETHEUS_STATS = 9902

# The xDS control server (xds_server): ADS over gRPC, and an admin HTTP server with /status,
# /metrics and /healthz.
CONTROL_ADS_GRPC = 18000
CONTROL_ADMIN_HTTP = 18001
