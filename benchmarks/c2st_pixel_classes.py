"""Which pixels still give the renderer away: real recordings with one class of pixels generated.

Each hybrid is a real recording whose pixels of one class, by the renderer's expected events
over the whole recording (both polarities), are replaced by the same pixels of the renderer's
own sample of that image: every event at such a pixel comes from the renderer, every other
event is real. The C2ST of the real recordings against the hybrids says how much that class
alone gives the generated recordings away (0.5: nothing; the class "all" is the renderer
itself). Classes (expected events per pixel): background < 0.3, weak 0.3-2, medium 2-6, busy
>= 6.

``--compare NPZ`` runs the same study for an earlier renderer too (e.g. version 6, before its
sensor patterns: ``git show 9ec23c8:data/assets/learned_dvs.npz > v6.npz``), on the same pairs
and the same classifier seeds.

    python benchmarks/c2st_pixel_classes.py --compare v6.npz   # ~8 min on 2 cores
    python benchmarks/c2st_pixel_classes.py --smoke            # seconds
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: Pixel classes by the renderer's expected events per pixel over a recording: [low, high).
CLASSES = {"background (< 0.3)": (0.0, 0.3), "weak (0.3-2)": (0.3, 2.0),
           "medium (2-6)": (2.0, 6.0), "busy (>= 6)": (6.0, np.inf), "all": (0.0, np.inf)}


def pixel_hybrid(real: np.ndarray, generated: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``real`` events (``EVENT_DTYPE``) with those at pixels where ``mask`` ``[34, 34]`` (``[y,
    x]``) is set replaced by ``generated``'s events there; sorted by time (stable: at equal
    times real events first)."""
    keep = ~mask[real["y"], real["x"]]
    take = mask[generated["y"], generated["x"]]
    out = np.concatenate([real[keep], generated[take]])
    return out[np.argsort(out["t"], kind="stable")]


def class_masks(expected: np.ndarray) -> dict[str, np.ndarray]:
    """``{class: [N, 34, 34] bool}`` of :data:`CLASSES` for the expected events per pixel
    ``[N, 34, 34]``."""
    return {name: (expected >= lo) & (expected < hi) for name, (lo, hi) in CLASSES.items()}


def study_model(study, model, seed: int) -> dict:
    """The C2ST of every class's hybrids for ``model`` (a :class:`LearnedDVS`), its sample
    drawn with ``seed``."""
    rates = model.rates(study.images)
    rng = np.random.default_rng(seed)
    generated = [model.sample(r, rng) for r in rates]
    masks = class_masks(rates.sum((1, 2)))
    out = {}
    for name, mask in masks.items():
        hybrids = [pixel_hybrid(r, g, m) for r, g, m in zip(study.real, generated, mask)]
        acc = study.c2st(hybrids)
        out[name] = {"c2st_per_seed": acc, "c2st": float(np.mean(acc)),
                     "share_of_pixels": float(mask.mean()),
                     "share_of_real_events": float(sum(m[r["y"], r["x"]].sum() for r, m in zip(study.real, mask))
                                                   / sum(len(r) for r in study.real))}
        print(f"  {name:20s} pixels {out[name]['share_of_pixels']:.3f}  C2ST {out[name]['c2st']:.3f}", flush=True)
    return out


def main(argv: list[str] | None = None) -> dict:
    from flexsnn.data.learned_dvs import LearnedDVS
    from flexsnn.io_utils import provenance

    from benchmarks._c2st_study import load_study, study_parser, study_record, write_result

    t_start = time.perf_counter()
    ap = study_parser(__doc__, "unused here")
    ap.add_argument("--compare", type=Path, default=None, metavar="NPZ",
                    help="an earlier learned renderer to study beside --model")
    study = load_study(ap, argv)
    models = {"studied": study.model}
    if study.args.compare is not None:
        models["compared"] = LearnedDVS(study.args.compare)
    result: dict = {"classes": {k: list(v) for k, v in CLASSES.items()}, "renderers": {}}
    for role, model in models.items():
        print(f"{role}: {model.path}")
        result["renderers"][role] = {"path": str(model.path), "hybrids": study_model(study, model, study.args.seed)}
    result |= {**study_record(study), "seconds": time.perf_counter() - t_start, **provenance()}
    print(f"\n{'pixels from the renderer':24s}" + "".join(f"{role:>12s}" for role in models))
    for name in CLASSES:
        print(f"{name:24s}" + "".join(f"{result['renderers'][role]['hybrids'][name]['c2st']:12.3f}"
                                      for role in models))
    write_result(study, "c2st_pixel_classes", result)
    return result


if __name__ == "__main__":
    main()
