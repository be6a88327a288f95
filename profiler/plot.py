"""PNG of latency vs throughput: one panel per model, one line per (target, batch size) through
its concurrency points; p50 solid, p99 dashed; tier bounds as horizontal lines."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_runs(records: Sequence[Mapping[str, Any]], path: Path) -> Path:
    models = sorted({r["model"] for r in records})
    fig, axes = plt.subplots(1, len(models), figsize=(7 * len(models), 6.5), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        colour = iter(plt.rcParams["axes.prop_cycle"].by_key()["color"] * 4)
        bounds: dict[str, float] = {}
        for rec in (r for r in records if r["model"] == model):
            for t in rec["tiers"]:
                if t["p99_bound_ms"] is not None:
                    bounds[t["tier"]] = t["p99_bound_ms"]
            for b in sorted({p["batch_size"] for p in rec["points"]}):
                pts = sorted((p for p in rec["points"] if p["batch_size"] == b and p["requests"]),
                             key=lambda p: p["concurrency"])
                if not pts:
                    continue
                c = next(colour)
                x = [p["inferences_per_s"] for p in pts]
                ax.plot(x, [p["p50_ms"] for p in pts], "o-", color=c, label=f"{rec['target']} batch {b} p50")
                ax.plot(x, [p["p99_ms"] for p in pts], "x--", color=c, alpha=0.7, label=f"batch {b} p99")
                for p in pts:
                    ax.annotate(f"c{p['concurrency']}", (p["inferences_per_s"], p["p50_ms"]), fontsize=7,
                                textcoords="offset points", xytext=(3, 3))
        for tier, ms in sorted(bounds.items()):
            ax.axhline(ms, color="grey", linestyle=":", linewidth=1)
            ax.annotate(f"{tier} p99 bound {ms:g} ms", (1, ms), xycoords=("axes fraction", "data"), fontsize=8,
                        color="grey", xytext=(-3, 2), textcoords="offset points", ha="right")
        ax.set_yscale("log")
        ax.set_xlabel("throughput per replica (inferences/s)")
        ax.set_ylabel("client latency (ms, log)")
        ax.set_title(f"{model}: latency vs throughput (cN = concurrency)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
