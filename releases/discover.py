"""Candidate replicas found in the cluster, not typed: ``releases start --discover-candidates``.

In a cluster the candidate version runs as a Deployment of its own behind a headless Service
labelled

    app.kubernetes.io/name: triton-candidate        # never "triton": the stable discovery's
                                                    # selector must not count it as a stable replica
    inference.platform/pool: <pool>
    inference.platform/model: <model>
    inference.platform/version: "<N>"

and with the stable Services' port names (``http``, ``grpc``, ``http-metrics``).  The EndpointSlice
controller copies those labels onto the Service's slices, so one label selector lists exactly the
candidate replicas of (model, version); they are read with the stable discovery's own pure reader
(``control.discovery_k8s.replicas_from_slices``: the API reference's conditions, IPv6, a replica
listed in two slices counted once), and only serving ones become the release's endpoints (persisted
with the release, as typed ones are).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from control.discovery_k8s import SliceSelection, replicas_from_slices
from router_lib.release import CandidateEndpoint

CANDIDATE_APP = "triton-candidate"
MODEL_LABEL = "inference.platform/model"
VERSION_LABEL = "inference.platform/version"


class CandidateDiscoveryError(RuntimeError):
    """No serving candidate replica, or the API server could not be read (the message says which)."""


def candidate_selection(model: str, version: str, namespace: str = "inference") -> SliceSelection:
    return SliceSelection(namespace=namespace, label_selector=(
        f"app.kubernetes.io/name={CANDIDATE_APP},{MODEL_LABEL}={model},{VERSION_LABEL}={version}"))


def candidate_endpoints(slices: Iterable[Mapping[str, Any]], selection: SliceSelection
                        ) -> tuple[list[CandidateEndpoint], list[str]]:
    """Serving candidate replicas of the slices (pure), and why any slice or replica was left out."""
    replicas, problems = replicas_from_slices(slices, selection)
    endpoints = []
    for pool in sorted(replicas.by_pool):
        for r in replicas.by_pool[pool]:
            if r.serving:
                endpoints.append(CandidateEndpoint(pool, r.host, r.http_port, r.grpc_port, r.metrics_url))
            else:
                problems.append(f"{pool}/{r.host}: not serving ({'terminating' if r.terminating else 'not ready'})")
    return endpoints, problems


def discover_candidates(api: Any, model: str, version: str, namespace: str = "inference") -> list[CandidateEndpoint]:
    """List the candidate's EndpointSlices once (``api``: a ``kubernetes`` ``DiscoveryV1Api``)."""
    selection = candidate_selection(model, version, namespace)
    try:
        response = api.list_namespaced_endpoint_slice(namespace, label_selector=selection.label_selector,
                                                      _preload_content=False, _request_timeout=(10, 30))
        items = json.loads(response.data).get("items") or []
    except Exception as e:  # the kubernetes client raises its own ApiException, urllib3 errors, ...
        raise CandidateDiscoveryError(f"cannot list EndpointSlices in {namespace!r}: {type(e).__name__}: {e}") from None
    endpoints, problems = candidate_endpoints(items, selection)
    if not endpoints:
        why = "; ".join(problems) or f"no EndpointSlice matches {selection.label_selector!r}"
        raise CandidateDiscoveryError(f"no serving candidate replica of {model} v{version} in {namespace!r}: {why}")
    return endpoints
