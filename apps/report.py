"""The demo's report folder: ``report.md``, ``report.html`` and five PNGs.

Files (names are stable; tests and the README refer to them):

- ``accuracy_vs_T.png``: accuracy at T = 1..10 of the SDT and MTT chip images (time-binned,
  quantized) and float models, with the asynchronous simulator's accuracy as a level line.
- ``timebinned_vs_async.png``: time-binned (training T) vs asynchronous bars, generated and
  real test data, beside the paper's GPU -> Speck2e figures.
- ``confusion.png``: asynchronous confusion matrices (generated test data), SDT and MTT.
- ``raster.png``: one test sample's input events and each chip image's output spikes.
- ``memory_map.png``: the chip image's kernel and neuron memory per Speck2e core.

The HTML is the markdown converted by a small converter (headings, paragraphs, lists, pipe
tables, images, code blocks): no extra dependency.
"""

from __future__ import annotations

import html
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from flexsnn.io_utils import atomic_path, atomic_write_text
from flexsnn.training.recipes import recipe_text

if TYPE_CHECKING:  # pragma: no cover
    from flexsnn.apps.demo_results import DemoResult

log = logging.getLogger(__name__)

FIGURES = ("accuracy_vs_T.png", "timebinned_vs_async.png", "confusion.png", "raster.png",
           "memory_map.png")
COLORS = {"sdt": "#1f77b4", "mtt": "#d62728", "mtt-plain": "#ff9f40"}
LABELS = {"sdt": "SDT", "mtt": "MTT+chip", "mtt-plain": "MTT"}
#: What each arm is, for the report's text.
ARM_TEXT = {"sdt": "SDT at T={T} (the baseline)",
            "mtt": "the chip recipe: MTT (s={s}) " + recipe_text(),
            "mtt-plain": "the paper's MTT (s={s}; input stage at T={T}, later stages from U[{lo}, {hi}])"}
#: Where the asynchronous run is drawn on the bin axis (beyond the finest bins).
ASYNC_X = 300


def _pct(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}"


def _gap(a: Optional[float], b: Optional[float]) -> str:
    if a is None or b is None:
        return ""
    return f" ({100 * (b - a):+.2f})"


# ------------------------------------------------------------------------------ text table
def format_table(result: "DemoResult") -> str:
    """The plain-text summary the CLI prints: per model, time-binned at the training T vs
    asynchronous, on generated and on real test data (accuracy in %)."""
    T = result.config.T
    head = ("model", f"float T={T}", f"chip T={T}", "chip async", f"real T={T}", "real async")
    rows = []
    for scheme, res in result.models.items():
        tb = res.time_binned.get(T)
        rows.append((
            LABELS.get(scheme, scheme), _pct(res.float_acc.get(T)), _pct(tb),
            _pct(res.async_acc) + _gap(tb, res.async_acc),
            _pct(res.real_time_binned),
            _pct(res.real_async) + _gap(res.real_time_binned, res.real_async),
        ))
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in rows]
    per_t = ["", "time-binned chip accuracy (%) by T:",
             "T         " + "  ".join(f"{t:>6d}" for t in result.config.T_eval)]
    for scheme, res in result.models.items():
        per_t.append(f"{LABELS.get(scheme, scheme):<9} " + "  ".join(
            f"{_pct(res.time_binned.get(t)):>6}" for t in result.config.T_eval))
    return "\n".join(lines + per_t)


# --------------------------------------------------------------------------------- figures
def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)


def plot_accuracy_vs_T(result: "DemoResult", path: Path) -> None:
    """Accuracy against the number of time bins per recording (log axis; finer bins to the
    right), each arm's chip image time-binned, with the asynchronous run drawn at the far right:
    the chip behaves like very fine bins."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.8, 4.2))
    Ts = list(result.config.T_eval)
    for scheme, res in result.models.items():
        c = COLORS.get(scheme)
        ax.plot(Ts, [100 * res.time_binned.get(t, np.nan) for t in Ts], "o-", color=c,
                label=f"{LABELS[scheme]} chip image, time-binned")
        if len(res.float_acc) > 1:
            ax.plot(Ts, [100 * res.float_acc.get(t, np.nan) for t in Ts], "x:", color=c, alpha=0.7,
                    label=f"{LABELS[scheme]} float model")
        if res.async_acc is not None:
            ax.plot([max(Ts), ASYNC_X], [100 * res.time_binned.get(max(Ts), np.nan), 100 * res.async_acc],
                    ":", color=c, lw=1)
            ax.plot([ASYNC_X], [100 * res.async_acc], "*", ms=11, color=c,
                    label=f"{LABELS[scheme]} asynchronous ({_pct(res.async_acc)} %)")
    ax.set_xscale("log")
    ticks = sorted(set(Ts) | {ASYNC_X})
    ax.set_xticks(ticks)
    ax.set_xticklabels(["async" if t == ASYNC_X else str(t) for t in ticks], fontsize=7)
    ax.set_xlabel("time bins per recording T (finer bins to the right)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"Accuracy vs bin width ({result.config.dataset}, {result.n_test} test samples)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    _save(fig, path)


def plot_timebinned_vs_async(result: "DemoResult", path: Path) -> None:
    import matplotlib.pyplot as plt

    from flexsnn.apps.paper_figures import PAPER_SPECK_TABLE

    T = result.config.T
    fig, (ax, axp) = plt.subplots(1, 2, figsize=(9.6, 4.0), gridspec_kw={"width_ratios": [2, 1]})
    groups, tb, asy, group_colors = [], [], [], []
    for data in ("generated", "real"):
        for scheme, res in result.models.items():
            a = res.time_binned.get(T) if data == "generated" else res.real_time_binned
            b = res.async_acc if data == "generated" else res.real_async
            if a is None and b is None:
                continue
            name = result.config.dataset if data == "generated" else "real N-MNIST"
            groups.append(f"{LABELS[scheme]}\n{name}")
            group_colors.append(COLORS.get(scheme))
            tb.append(np.nan if a is None else 100 * a)
            asy.append(np.nan if b is None else 100 * b)
    x = np.arange(len(groups))
    w = 0.38
    b1 = ax.bar(x - w / 2, tb, w, label=f"time-binned, T={T}", color="#8c8c8c")
    b2 = ax.bar(x + w / 2, asy, w, label="asynchronous (event-driven)", color=group_colors)
    for bars in (b1, b2):
        for r in bars:
            if np.isfinite(r.get_height()):
                ax.annotate(f"{r.get_height():.1f}", (r.get_x() + r.get_width() / 2, r.get_height()),
                            ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x)
    ax.set_xticklabels(groups, fontsize=8)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 105)
    ax.set_title("Time-binned vs asynchronous (measured)")
    ax.legend(fontsize=7, loc="lower right")
    paper = PAPER_SPECK_TABLE["preprint"]
    px = np.arange(2)
    axp.bar(px - w / 2, [100 * paper[s]["gpu"] for s in PAPER_ORDER], w, color="#8c8c8c",
            label="GPU (T=10)")
    axp.bar(px + w / 2, [100 * paper[s]["chip"] for s in PAPER_ORDER], w,
            color=[COLORS["sdt"], COLORS["mtt-plain"]], label="Speck2e devkit")
    for i, s in enumerate(PAPER_ORDER):
        axp.annotate(f"{100 * paper[s]['gpu']:.2f}", (i - w / 2, 100 * paper[s]["gpu"]), ha="center",
                     va="bottom", fontsize=7)
        axp.annotate(f"{100 * paper[s]['chip']:.2f}", (i + w / 2, 100 * paper[s]["chip"]), ha="center",
                     va="bottom", fontsize=7)
    axp.set_xticks(px)
    axp.set_xticklabels(["SDT", "MTT"])
    axp.set_ylim(80, 101)
    axp.set_title("Paper (N-MNIST, Table 7)", fontsize=9)
    axp.legend(fontsize=7, loc="lower right")
    _save(fig, path)


#: The paper's table has these two models (its MTT is this demo's ``mtt-plain``).
PAPER_ORDER = ("sdt", "mtt")


def plot_confusion(result: "DemoResult", path: Path) -> None:
    import matplotlib.pyplot as plt

    arms = list(result.models)
    fig, axes = plt.subplots(1, len(arms), figsize=(4.5 * len(arms), 4.2), squeeze=False)
    for ax, scheme in zip(axes[0], arms):
        res = result.models[scheme]
        cm = res.confusion if res.confusion is not None else np.zeros((1, 1), dtype=np.int64)
        ax.imshow(cm, cmap="Blues")
        k = cm.shape[0]
        for i in range(k):
            for j in range(cm.shape[1]):
                if cm[i, j]:
                    ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=6,
                            color="white" if cm[i, j] > cm.max() / 2 else "black")
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_xticks(range(cm.shape[1]))
        ax.set_yticks(range(k))
        ax.set_title(f"{LABELS[scheme]}: asynchronous simulator, acc {_pct(res.async_acc)} %",
                     fontsize=9)
    fig.suptitle(f"Confusion matrices ({result.config.dataset} test, {result.n_async} samples)")
    _save(fig, path)


def plot_raster(result: "DemoResult", path: Path) -> None:
    import matplotlib.pyplot as plt

    tr = result.trace
    arms = list(result.models)
    fig, axes = plt.subplots(1 + len(arms), 1, figsize=(7.5, 3.3 + 1.6 * len(arms)), sharex=True,
                             gridspec_kw={"height_ratios": [2.2] + [1] * len(arms)})
    if tr is None:
        for ax in axes:
            ax.text(0.5, 0.5, "no sample traced", ha="center", va="center")
        _save(fig, path)
        return
    ev = tr.events
    t0 = int(ev["t"][0]) if ev.size else 0
    t_ms = (ev["t"] - t0) / 1e3
    pix = ev["y"].astype(np.int64) * 34 + ev["x"].astype(np.int64)
    on = ev["p"] == 1
    axes[0].scatter(t_ms[on], pix[on], s=1, c="#d62728", label="ON", rasterized=True)
    axes[0].scatter(t_ms[~on], pix[~on], s=1, c="#1f77b4", label="OFF", rasterized=True)
    axes[0].set_ylabel("pixel (y*34 + x)")
    axes[0].legend(fontsize=7, loc="upper right", markerscale=6)
    axes[0].set_title(f"Test sample {tr.index} (label {tr.label}): {ev.size} input events")
    for ax, scheme in zip(axes[1:], arms):
        out = tr.outputs.get(scheme)
        if out is not None and out.size:
            ax.scatter((out["t"] - t0) / 1e3, out["feature"], s=10, marker="|",
                       c=COLORS[scheme])
        counts = np.bincount(out["feature"].astype(np.int64), minlength=10) if out is not None and out.size \
            else np.zeros(10, dtype=np.int64)
        ax.set_yticks(range(len(counts)))
        ax.tick_params(axis="y", labelsize=6)
        ax.set_ylim(-0.5, len(counts) - 0.5)
        ax.set_ylabel("class")
        ax.set_title(f"{LABELS[scheme]} chip image, asynchronous: {int(counts.sum())} output spikes, "
                     f"predicted {tr.predictions.get(scheme, -1)}", fontsize=9)
    axes[-1].set_xlabel("time (ms)")
    _save(fig, path)


def plot_memory_map(result: "DemoResult", image: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    from flexsnn.converters.speck2e import SPECK2E

    rows = {r["core"]: r for r in image.memory_report()}
    n_cores = len(SPECK2E.kernel_memory)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, kind in zip(axes, ("kernel", "neuron")):
        cap = np.asarray(getattr(SPECK2E, f"{kind}_memory"), dtype=float) / 1024
        used = np.asarray([rows[c][f"{kind}_used"] if c in rows else 0 for c in range(n_cores)],
                          dtype=float) / 1024
        x = np.arange(n_cores)
        ax.bar(x, cap, color="#dddddd", edgecolor="#999999", label="capacity")
        ax.bar(x, used, color="#2ca02c", label="used")
        for c in range(n_cores):
            if c in rows:
                ax.annotate(f"{rows[c]['name']}\n{100 * used[c] / cap[c]:.0f}%", (c, max(used[c], 0)),
                            ha="center", va="bottom", fontsize=6)
        ax.set_xticks(x)
        ax.set_xlabel("Speck2e core")
        ax.set_ylabel(f"{kind} memory (Ki entries)")
        ax.set_title(f"{kind} memory per core")
        ax.legend(fontsize=7)
    fig.suptitle(f"Chip image core memory map ({result.config.model}, {len(rows)} of {n_cores} cores used)")
    _save(fig, path)


# -------------------------------------------------------------------------------- markdown
def _md_table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def build_markdown(result: "DemoResult") -> str:
    """The report's markdown text."""
    from flexsnn.apps.paper_figures import PAPER_SPECK_TABLE

    cfg = result.config
    T = cfg.T
    title = {"reproduce": "flexsnn reproduce speck-table", "quick": "flexsnn demo (quick mode)"}.get(
        cfg.mode, "flexsnn demo")
    out = [f"# {title}: " + " vs ".join(LABELS[a] for a in result.models) + " on a Speck2e chip image", ""]
    arm_text = [f"**{LABELS[a]}**: " + ARM_TEXT[a].format(T=T, s=cfg.s, lo=max(1, T - cfg.r_left), hi=T + cfg.r_right)
                for a in result.models]
    if cfg.mode == "quick":
        out += ["> **Quick mode**: fewer samples and epochs than the default demo "
                f"({result.n_train} training recordings, {cfg.base_epochs} + {cfg.finetune_epochs} "
                f"epochs, {result.n_async} asynchronous test samples). The figures are rough; "
                "run `flexsnn demo` without `--quick` for the calibrated budget.", ""]
    elif cfg.mode == "tiny":
        out += ["> **Tiny mode** (test size): the numbers below mean nothing.", ""]
    out += [
        f"Model `{cfg.model}`{' with channels ' + '/'.join(map(str, cfg.channels)) if cfg.model_kwargs else ''} "
        f"(Speck2e-sized, no biases) "
        f"trained on **{cfg.dataset}** "
        f"({result.n_train} training recordings): SDT at T={T} with BatchNorm for {cfg.base_epochs} "
        f"epochs, then bias removal (biases and BN means zeroed, BN scale folded into the weights), "
        f"then {cfg.finetune_epochs} fine-tune epochs without BN for each arm: " + "; ".join(arm_text)
        + f". Each was exported to a Speck2e chip image (8-bit weights) and run time-binned (sinabs, "
        f"quantized weights, T={', '.join(str(t) for t in cfg.T_eval)}) and on flexsnn's event-driven "
        "asynchronous simulator, which has no time steps at all, as the chip.",
        "",
        "## Result",
        "",
    ]
    rows = []
    for scheme, res in result.models.items():
        tb = res.time_binned.get(T)
        rows.append([LABELS[scheme], _pct(res.float_acc.get(T)), _pct(tb),
                     _pct(res.async_acc) + _gap(tb, res.async_acc),
                     _pct(res.real_time_binned), _pct(res.real_async) + _gap(res.real_time_binned, res.real_async)])
    out += [_md_table(["model", f"float model, T={T}", f"chip image time-binned, T={T}",
                       "chip image asynchronous (gap)", f"real N-MNIST time-binned, T={T}",
                       "real N-MNIST asynchronous (gap)"], rows), ""]
    if cfg.dataset == "nmnist":
        out += [f"Accuracy in % on {result.n_test} real N-MNIST test recordings from "
                f"`{cfg.data_root}` (asynchronous: the first {result.n_async}); the models were "
                "trained on real N-MNIST, so there are no separate real-data columns.", ""]
    else:
        out += [f"Accuracy in % on {result.n_test} generated test recordings (asynchronous: the "
                f"first {result.n_async}); real N-MNIST: {result.n_real} recordings"
                + (f" from `{result.real_root}` (split `{result.real_split}`)" if result.real_root else
                   " (none given: pass `--data DIR`)") + ".", ""]
    if result.real_root and cfg.dataset == "saccade-mnist":
        out += ["The models never saw a real recording: the real columns measure the transfer from "
                "generated saccade-mnist events to real N-MNIST recordings, and the gap to the "
                "generated columns is that transfer gap."
                + (" The learned generator (the default) was itself fitted on half of nmnist-small "
                   "(the recordings of even rank within their class); the last line below counts "
                   "only recordings that neither the generator's fit nor training touched."
                   if any(len(res.real_subsets) > 2 for res in result.models.values()) else "")]
        for scheme, res in result.models.items():
            for name, sub in res.real_subsets.items():
                out.append(f"- {LABELS[scheme]}, real recordings whose MNIST image was {name}: "
                           f"{_pct(sub['accuracy'])} % asynchronous ({int(sub['n'])} recordings)")
        out.append("")
    verdict = _verdict(result)
    out += [verdict, ""]
    out += ["## The paper's table (N-MNIST, Speck2e devkit)", ""]
    prow = []
    for version, table in PAPER_SPECK_TABLE.items():
        for scheme in PAPER_ORDER:
            g, c = table[scheme]["gpu"], table[scheme]["chip"]
            prow.append([version, scheme.upper(), _pct(g), _pct(c) + _gap(g, c)])
    for scheme, res in result.models.items():
        real_chip = res.real_async if cfg.mode != "reproduce" else res.async_acc
        prow.append([f"measured here ({'real N-MNIST' if cfg.mode == 'reproduce' else cfg.dataset})",
                     LABELS[scheme], _pct(res.float_acc.get(T)),
                     _pct(res.async_acc) + _gap(res.float_acc.get(T), res.async_acc)])
        if cfg.mode != "reproduce" and real_chip is not None:
            prow.append(["measured here (real N-MNIST, transfer)", LABELS[scheme],
                         _pct(res.real_time_binned), _pct(real_chip) + _gap(res.real_time_binned, real_chip)])
    out += [_md_table(["source", "model", f"GPU / float or time-binned, T={T}",
                       "chip / asynchronous (change)"], prow), ""]
    out += ["The paper trains on the full N-MNIST (60,000 recordings) and runs the chip itself; "
            "this report uses " + ("the full N-MNIST too" if cfg.mode == "reproduce" else
                                   "generated data and a small budget") +
            " and flexsnn's simulator, which follows the chip's integer rules but is not the chip "
            "(no per-core parallelism, no SynOps ceiling, no dropped events). Compare patterns "
            "(does the asynchronous run lose accuracy against the time-binned one?) rather than "
            "absolute numbers.", ""]
    out += ["## Accuracy vs bin width", "",
            "Time-binned runs of each chip image at T bins per recording (finer bins to the right) and the "
            "asynchronous run, which behaves like very fine bins.", "",
            "![accuracy vs T](accuracy_vs_T.png)", ""]
    head = ["model"] + [f"T={t}" for t in cfg.T_eval] + ["async", "SynOps/sample (async)"]
    rows = []
    for scheme, res in result.models.items():
        rows.append([f"{LABELS[scheme]} chip, time-binned"] + [_pct(res.time_binned.get(t)) for t in cfg.T_eval]
                    + [_pct(res.async_acc), "n/a" if res.synops_per_sample is None else f"{res.synops_per_sample:,.0f}"])
        if res.float_acc:
            rows.append([f"{LABELS[scheme]} float"] + [_pct(res.float_acc.get(t)) for t in cfg.T_eval] + ["", ""])
    out += [_md_table(head, rows), ""]
    out += ["## Time-binned vs asynchronous", "", "![time-binned vs async](timebinned_vs_async.png)", ""]
    out += ["## Confusion matrices (asynchronous, generated test data)", "", "![confusion](confusion.png)", ""]
    out += ["## One sample through the chip images", "", "![raster](raster.png)", ""]
    out += ["## Chip memory map", "", "![memory map](memory_map.png)", ""]
    shown = next(iter(result.models.values()))
    if shown.chip_summary:
        out += [f"{LABELS[shown.scheme]} chip image:", "", "```", shown.chip_summary, "```", ""]
    out += ["## Cost", ""]
    rows = [["data (load or generate)", f"{result.stage_seconds.get('data', 0):.1f}"],
            [f"base SDT+BN training ({cfg.base_epochs} epochs)", f"{result.base_seconds:.1f}"]]
    for scheme, res in result.models.items():
        rows.append([f"{LABELS[scheme]} fine-tune ({cfg.finetune_epochs} epochs; "
                     f"{res.epoch_seconds or 0:.1f} s/epoch)", f"{res.train_seconds:.1f}"])
    for name in ("export", "eval float", "eval time-binned", "eval async", "eval real"):
        rows.append([name, f"{result.stage_seconds.get(name, 0):.1f}"])
    rows.append(["**total**", f"**{result.seconds:.1f}**"])
    out += [_md_table(["stage", "seconds"], rows), ""]
    if result.load_average:
        out += ["Machine load (1-minute load average) at start / end: "
                + " / ".join(f"{v:.1f}" for v in result.load_average.values())
                + f" on {_cores()} cores; timings grow with it.", ""]
    synops = [f"{LABELS[a]} {r.synops_per_sample:,.0f}" for a, r in result.models.items() if r.synops_per_sample]
    if synops:
        out += ["Mean SynOps per sample on the simulator: " + ", ".join(synops) + ".", ""]
    if result.reused:
        reused = [k for k, v in result.reused.items() if v]
        if reused:
            out += [f"Checkpoints reused from an earlier run (`--reuse`): {', '.join(reused)}.", ""]
    if result.notes:
        out += ["## Notes", ""] + [f"- {n}" for n in result.notes] + [""]
    out += ["## Settings", "", "```"]
    out += [f"{k} = {v}" for k, v in sorted(cfg.to_dict().items())]
    out += ["```", "", "Files: " + ", ".join(f"`{Path(p).name}`" for r in result.models.values()
                                               for p in (r.checkpoint, r.chip) if p)
            + f" in `{cfg.artifacts_dir}`.", ""]
    return "\n".join(out)


def _cores() -> int:
    import os

    return os.cpu_count() or 1


def _verdict(result: "DemoResult") -> str:
    T = result.config.T
    parts = []
    for data, key_tb, key_as in (("generated", None, "async_acc"), ("real", "real_time_binned", "real_async")):
        gaps = {}
        for scheme, res in result.models.items():
            tb = res.time_binned.get(T) if key_tb is None else getattr(res, key_tb)
            a = getattr(res, key_as)
            if tb is not None and a is not None:
                gaps[scheme] = 100 * (a - tb)
        if len(gaps) >= 2:
            best = max(gaps, key=gaps.get)
            parts.append(f"on {data} test data, going from time-binned (T={T}) to asynchronous changes "
                         + ", ".join(f"{LABELS[a]} by {g:+.2f} pt" for a, g in gaps.items())
                         + f" ({LABELS[best]} keeps the most of its accuracy)")
    if not parts:
        return ""
    return "**Measured**: " + "; ".join(parts) + "."


# ------------------------------------------------------------------------------------ HTML
_INLINE = [
    (re.compile(r"!\[([^\]]*)\]\(([^)]+)\)"), r'<img src="\2" alt="\1" style="max-width:100%">'),
    (re.compile(r"\*\*([^*]+)\*\*"), r"<strong>\1</strong>"),
    (re.compile(r"`([^`]+)`"), r"<code>\1</code>"),
]


def _inline(text: str) -> str:
    text = html.escape(text, quote=False)
    for pattern, repl in _INLINE:
        text = pattern.sub(repl, text)
    return text


def markdown_to_html(markdown: str, *, title: str = "flexsnn report") -> str:
    """A small markdown -> HTML converter for the report's own markdown (headings, paragraphs,
    ``-`` lists, ``>`` quotes, pipe tables, fenced code, images, bold, inline code)."""
    body: list[str] = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            j = i + 1
            block = []
            while j < len(lines) and not lines[j].startswith("```"):
                block.append(lines[j])
                j += 1
            body.append("<pre><code>" + html.escape("\n".join(block)) + "</code></pre>")
            i = j + 1
            continue
        m = re.match(r"^(#{1,6}) (.*)$", line)
        if m:
            n = len(m.group(1))
            body.append(f"<h{n}>{_inline(m.group(2))}</h{n}>")
        elif line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                rows.append([c.strip() for c in lines[i].strip().strip("|").split("|")])
                i += 1
            table = ["<table>", "<tr>" + "".join(f"<th>{_inline(c)}</th>" for c in rows[0]) + "</tr>"]
            for r in rows[2:]:
                table.append("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>")
            table.append("</table>")
            body.append("\n".join(table))
            continue
        elif line.startswith("- "):
            items = []
            while i < len(lines) and lines[i].startswith("- "):
                items.append(f"<li>{_inline(lines[i][2:])}</li>")
                i += 1
            body.append("<ul>" + "".join(items) + "</ul>")
            continue
        elif line.startswith("> "):
            body.append(f"<blockquote>{_inline(line[2:])}</blockquote>")
        elif line.strip():
            body.append(f"<p>{_inline(line)}</p>")
        i += 1
    style = ("body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px}"
             "blockquote{background:#fff4d6;padding:6px 12px;margin:0}pre{background:#f4f4f4;padding:8px;overflow-x:auto}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


# ----------------------------------------------------------------------------------- write
def write_report(result: "DemoResult", out_dir: Path, *, images: dict[str, Any]) -> dict[str, str]:
    """Write ``report.md``, ``report.html`` and the PNGs into ``out_dir``; return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    plot_accuracy_vs_T(result, out_dir / "accuracy_vs_T.png")
    plot_timebinned_vs_async(result, out_dir / "timebinned_vs_async.png")
    plot_confusion(result, out_dir / "confusion.png")
    plot_raster(result, out_dir / "raster.png")
    plot_memory_map(result, images.get("mtt") or images.get("sdt"), out_dir / "memory_map.png")
    for name in FIGURES:
        files[name] = str(out_dir / name)
    md = build_markdown(result)
    atomic_write_text(out_dir / "report.md", md)
    atomic_write_text(out_dir / "report.html", markdown_to_html(md, title="flexsnn demo report"))
    files["report.md"] = str(out_dir / "report.md")
    files["report.html"] = str(out_dir / "report.html")
    return files
