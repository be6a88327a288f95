"""Small, readable xDS inputs: three pools and tiered routes (the tests' and benchmarks' examples)."""

from __future__ import annotations

from xds_server import DataPlaneSettings, Endpoint, PoolEndpoints, RouteWeights

MODELS = ("digits_classifier", "text_embedding")


def pool(
    name: str,
    *,
    accelerator: str | None = None,
    models: tuple[str, ...] = MODELS,
    replicas: int = 1,
    base_port: int = 9000,
    emulated: bool | None = None,
    versions: tuple[tuple[str, str], ...] = (),
) -> PoolEndpoints:
    return PoolEndpoints(
        pool=name,
        accelerator=accelerator or name,
        emulated=(name != "cpu") if emulated is None else emulated,
        models=models,
        replicas=tuple(Endpoint("127.0.0.1", base_port + 10 * i, base_port + 10 * i + 1) for i in range(replicas)),
        model_versions=versions,
    )


def three_pools() -> list[PoolEndpoints]:
    return [
        pool("cpu", base_port=9000, replicas=2),
        pool("gpu", base_port=9100),
        pool("inferentia", base_port=9200, models=("text_embedding",)),
    ]


def routes_for(
    weights_by_model: dict[str, dict[str, int]], settings: DataPlaneSettings | None = None
) -> list[RouteWeights]:
    settings = settings or DataPlaneSettings()
    return [
        RouteWeights.of(model, tier, tuple(sorted(weights.items())))
        for model, weights in weights_by_model.items()
        for tier in settings.tiers
    ]


def tiered_routes() -> list[RouteWeights]:
    """gold on the fast pools, silver split, bronze on the cheap pool."""
    return [
        RouteWeights.of("text_embedding", "gold", (("gpu", 70), ("inferentia", 30))),
        RouteWeights.of("text_embedding", "silver", (("cpu", 50), ("inferentia", 50))),
        RouteWeights.of("text_embedding", "bronze", (("cpu", 100), ("gpu", 0))),
        RouteWeights.of("digits_classifier", "gold", (("gpu", 100),)),
        RouteWeights.of("digits_classifier", "silver", (("cpu", 80), ("gpu", 20))),
        RouteWeights.of("digits_classifier", "bronze", (("cpu", 100),)),
    ]
