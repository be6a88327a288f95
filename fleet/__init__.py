"""Local Triton processes and nothing above them: start, supervise, restart and stop replicas
(``supervisor``, ``triton_process``), the runtime file that says where they listen (``runtime``), and
the local Prometheus.  It must not import the control plane or the platform that composes them.
"""
