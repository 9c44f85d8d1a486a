"""PNG of each used core's kernel and neuron memory against its capacity (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path

from flexsnn.converters.chip_image import ChipImage
from flexsnn.converters.speck2e import SPECK2E, ChipLimits
from flexsnn.io_utils import atomic_path


def plot_memory(image: ChipImage, path: str | Path, *, limits: ChipLimits = SPECK2E) -> Path:
    """Write a bar chart (one group per chip core 0..8: kernel and neuron memory, used vs capacity,
    in Ki entries; unused cores show capacity only) to ``path`` atomically; returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    used = {row["core"]: row for row in image.memory_report(limits)}
    cores = list(range(limits.n_cores))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharex=True)
    for ax, kind, caps in ((axes[0], "kernel", limits.kernel_memory), (axes[1], "neuron", limits.neuron_memory)):
        cap = [c / 1024 for c in caps]
        use = [used[c][f"{kind}_used"] / 1024 if c in used else 0.0 for c in cores]
        ax.bar(cores, cap, color="#dddddd", edgecolor="#888888", label="capacity")
        ax.bar(cores, use, color=["#d62728" if u > k else "#1f77b4" for u, k in zip(use, cap)], label="used")
        for c in cores:
            if c in used:
                ax.text(c, use[c] + max(cap) * 0.01, f"L{used[c]['layer']}\n{100 * use[c] / cap[c]:.0f}%",
                        ha="center", va="bottom", fontsize=7)
        ax.set_title(f"{kind} memory")
        ax.set_xlabel("core")
        ax.set_ylabel("Ki entries")
        ax.set_xticks(cores)
    axes[0].legend(loc="upper left", fontsize=8)
    fig.suptitle(f"{image.chip}: memory per core (layer index and use above each bar)", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path
