"""A collage of real recordings' events (``benchmarks/_collage.py``): does it pass the C2ST, does it
still show its own image, and does a model trained on it transfer to real recordings?

The donors are the fit half's 503 real recordings (their images' expected maps from the shipped
learned renderer); a fit image never takes its own recording. The held-out half's real
recordings are never donors: they are what the C2ST tests against and what the transfer is
measured on.

Part 1, per arm (the shipped learned renderer; collages with donor sets of ``--nearest`` sizes;
at 10 donors, a random donor set, and the background, pixels expected to fire < 0.3 events, from
one random donor per recording, the option the default leaves off): the C2ST
(``--c2st-seeds``), the paired frame correlation of each held-out generated recording with its
image's real recording (T = 1 and 10: does the collage show its own image; the 1-donor arm is
another image's real recording), events per recording against the real ones, and the share of
a collage's events taken from donors of its image's class.

Part 2, **donors apart** (:func:`donors_apart`): the same C2ST with the donors kept apart from
the classifier's real training recordings, which the standard design cannot do (its donors are
the fit half, which its classifier trains on as real).

Part 3, **transfer** (``--train-seeds``, default 0,1,2): speck3c1fc trained on collages of the
4,000 training images of ``sim_to_real.py`` (donor set ``--transfer-nearest``; the demo's base
budget), tested on collages of the held-out images and on their real recordings. Compare with
``sim_to_real.json``'s ``learned`` arm (same seeds and budget).

Writes ``benchmarks/results/c2st_collage.json`` (``arms``: ``c2st``, ``c2st_per_seed``,
``paired_frame_correlation``, ``events_ratio``, ``same_class_event_share``; ``transfer``:
``generated_test_accuracy``, ``real_accuracy``, ``transfer_gap_pt`` per seed and mean;
``donors_apart``: the split's sizes and each arm's ``c2st``) and prints a table.

    python benchmarks/c2st_collage.py                 # ~6 min on 2 cores with the transfer runs cached, ~11 min without
    python benchmarks/c2st_collage.py --train-seeds "" # parts 1 and 2 only, ~5 min
    python benchmarks/c2st_collage.py --smoke --out /tmp/collage
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _ints(text: str) -> list[int]:
    return [int(s) for s in text.split(",") if s.strip()]


def fidelity(study, gen: list[np.ndarray], donor_labels: np.ndarray | None = None,
             donor_map: np.ndarray | None = None) -> dict:
    """How well the held-out generated recordings ``gen`` (pair by pair) show their own image:
    paired frame correlation with the real recording (T = 1, 10), events per recording over
    the real ones, and (for a collage's ``donor_map`` ``[N, P]``) the share of its events from
    donors of its image's class."""
    from benchmarks._s2r_stats import count_images, paired_frame_correlation

    held = study.held
    real = [study.real[i] for i in held]
    out = {"paired_frame_correlation": paired_frame_correlation(real, [gen[i] for i in held], Ts=(1, 10)),
           "events_ratio": float(np.mean([len(gen[i]) for i in held]) / np.mean([len(r) for r in real]))}
    if donor_map is not None:
        counts = count_images([gen[i] for i in held]).sum(1).reshape(len(held), -1)  # [N, P]
        same = donor_labels[donor_map[held]] == study.pairs.labels[held][:, None]
        out["same_class_event_share"] = float((counts * same).sum() / counts.sum())
    return out


def ablations(study, exclude: np.ndarray, seed: int, *, nearest: int) -> dict:
    """The collage with a part changed: a random donor set instead of the nearest, and the
    background (pixels expected to fire < 0.3 events) from one random donor per recording."""
    from benchmarks._collage import CollageRenderer

    fit, n = study.fit, len(study.real)
    donors = [study.real[i] for i in fit]
    renderer = CollageRenderer(donors, study.images[fit], nearest=nearest, model=study.model,
                               donor_rates=study.rates[fit])
    rng = np.random.default_rng(seed + 1)
    sets = np.stack([rng.choice(np.setdiff1d(np.arange(len(fit)), exclude[i]), nearest, replace=False)
                     for i in range(n)])
    out = {}
    dmap, duration = renderer.donor_map(study.images, seed=seed, exclude=exclude, sets=sets, rates=study.rates)
    out[f"collage, {nearest} random donors"] = (renderer.assemble(dmap, duration), dmap)
    renderer = CollageRenderer(donors, study.images[fit], nearest=nearest, model=study.model, background_events=0.3,
                               donor_rates=study.rates[fit])
    dmap, duration = renderer.donor_map(study.images, seed=seed, exclude=exclude, rates=study.rates)
    out[f"collage, {nearest} nearest, background from one donor"] = (renderer.assemble(dmap, duration), dmap)
    return out


#: single-statistic views (``_s2r_c2st.C2ST_VIEWS``) of the donors-apart arms
VIEWS = ("event_count", "first_last_event_ms", "active_pixels", "time_profile_T30", "count_image_4x4_blocks",
         "count_image")


def donors_apart(study, sizes: tuple[int, ...] = (3, 10)) -> dict:
    """The C2ST with the donors kept apart from the classifier's real training recordings.

    The standard design's classifier trains on the fit half's real recordings, which are also the
    collages' donors: their pixel sequences are in both classes, so it cannot learn them as a cue,
    and at test the held-out collages are made of sequences it learned as real. Here all 1,000
    pairs are split, by position within the class: the test images ``H`` (held-out half, rank
    mod 4 = 1: never in the learned renderer's fit), and of the rest, by position ``k`` within
    the class, ``B`` (k mod 4 = 0 or 1: the classifier's real training set), ``D1`` (k mod 4 = 2:
    donors of the collages it trains on) and ``D2`` (3: donors of the test images' collages).
    Arms: donors apart (D1 / D2); one donor set for both (D1: sequences learned as *generated*
    come back at test); ``B`` and ``D1`` as donors (the classifier's own real recordings among
    them, as in the standard design); and the learned renderer, all on this classifier. The
    learned renderer and the donors-apart arms also get the single-statistic views
    (:data:`VIEWS`), whose classifiers see a summary and so cannot take the shortcut of
    memorizing D1's sequences, which recur in the training collages."""
    from benchmarks._collage import CollageRenderer
    from benchmarks._s2r_c2st import c2st_accuracy, c2st_views

    ranks, labels, real = study.pairs.ranks, study.pairs.labels, study.real
    test = np.flatnonzero(study.pairs.held_out & (ranks % 4 == 1))
    rest = np.setdiff1d(np.arange(len(real)), test)
    k = np.zeros(len(real), int)
    for c in np.unique(labels):
        mine = rest[labels[rest] == c]
        k[mine[np.argsort(ranks[mine], kind="stable")]] = np.arange(mine.size)
    b, d1, d2 = rest[k[rest] % 4 < 2], rest[k[rest] % 4 == 2], rest[k[rest] % 4 == 3]

    def c2st(gen: dict) -> list[float]:
        return [c2st_accuracy([real[i] for i in b], [gen[i] for i in b], [real[i] for i in test],
                              [gen[i] for i in test], seed=s, epochs=study.args.c2st_epochs) for s in study.seeds]

    def collage(donors: np.ndarray, recipients: np.ndarray, m: int) -> dict:
        r = CollageRenderer([real[i] for i in donors], study.images[donors], nearest=min(m, len(donors) - 1),
                            model=study.model, donor_rates=study.rates[donors])
        dmap, duration = r.donor_map(study.images[recipients], seed=study.args.seed,
                                     exclude=r.own_recordings(study.images[recipients]),
                                     rates=study.rates[recipients])
        return dict(zip(recipients.tolist(), r.assemble(dmap, duration)))

    rng = np.random.default_rng(study.args.seed)
    arms = {"learned renderer (shipped)": {int(i): study.model.sample(study.rates[i], rng) for i in np.r_[b, test]}}
    for m in sizes:
        arms[f"collage {m}, donors apart (D1 for training, D2 for test)"] = collage(d1, b, m) | collage(d2, test, m)
        arms[f"collage {m}, one donor set D1 for both"] = collage(d1, np.r_[b, test], m)
        arms[f"collage {m}, B and D1 as donors (the classifier's own among them)"] = collage(
            np.r_[b, d1], np.r_[b, test], m)
    out = {"split": {"B": int(b.size), "D1": int(d1.size), "D2": int(d2.size), "test": int(test.size)}, "arms": {}}
    for name, gen in arms.items():
        acc = c2st(gen)
        out["arms"][name] = {"c2st": float(np.mean(acc)), "c2st_per_seed": acc}
        if name.startswith("learned") or "donors apart" in name:
            # single statistics: a classifier of a summary cannot memorize a donor's sequences
            out["arms"][name]["views"] = c2st_views(
                [real[i] for i in b], [gen[i] for i in b], [real[i] for i in test], [gen[i] for i in test],
                seed=study.seeds[0], epochs=study.args.c2st_epochs, names=VIEWS)
        views = out["arms"][name].get("views", {})
        print(f"  donors apart study: {name:64s} C2ST {np.mean(acc):.3f}"
              + "".join(f"  {v} {x:.2f}" for v, x in views.items()), flush=True)
    return out


def main(argv: list[str] | None = None) -> dict:
    from benchmarks._collage import CollageRenderer
    from flexsnn.io_utils import provenance

    from benchmarks._c2st_study import load_study, study_parser, study_record, write_result

    ap = study_parser(__doc__, "unused")
    ap.add_argument("--nearest", default="1,3,10,30", help="donor set sizes of the C2ST arms")
    ap.add_argument("--transfer-nearest", type=int, default=10, help="donor set size of the transfer arm")
    ap.add_argument("--train-seeds", default="0,1,2", help="training seeds of the transfer arm ('' skips it)")
    ap.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "flexsnn-c2st-collage",
                    help="cache of the transfer runs (resumes after an interruption)")
    study = load_study(ap, argv)
    a = study.args
    sizes, train_seeds = _ints(a.nearest), _ints(a.train_seeds)
    if a.smoke:
        sizes, train_seeds = [1, 3], train_seeds[:1]
    t_start, load_start = time.perf_counter(), os.getloadavg()
    fit, n = study.fit, len(study.real)
    exclude = np.full(n, -1)
    exclude[fit] = np.arange(len(fit))  # a fit image's own recording is donor number k
    donor_labels = study.pairs.labels[fit]
    result: dict = {"model": str(study.model.path), "donors": int(len(fit)), "arms": {}}
    rng = np.random.default_rng(a.seed)
    shipped = [study.model.sample(r, rng) for r in study.rates]
    arms = {"learned renderer (shipped)": (shipped, None)}
    for m in sizes:
        renderer = CollageRenderer([study.real[i] for i in fit], study.images[fit], nearest=m, model=study.model,
                                   donor_rates=study.rates[fit])
        dmap, duration = renderer.donor_map(study.images, seed=a.seed, exclude=exclude, rates=study.rates)
        arms[f"collage, {m} nearest donors"] = (renderer.assemble(dmap, duration), dmap)
    if not a.smoke:
        arms.update(ablations(study, exclude, a.seed, nearest=10))
    print(f"  rendered {len(arms)} sets ({time.perf_counter() - t_start:.0f} s)", flush=True)
    for name, (gen, dmap) in arms.items():
        acc = study.c2st(gen)
        rec = {"c2st": float(np.mean(acc)), "c2st_per_seed": acc,
               **fidelity(study, gen, donor_labels, None if dmap is None else dmap)}
        result["arms"][name] = rec
        corr = rec["paired_frame_correlation"]
        print(f"  {name:30s} C2ST {rec['c2st']:.3f}  corr T=1 {corr[1]:.3f} T=10 {corr[10]:.3f}  "
              f"events x{rec['events_ratio']:.3f}  same class {rec.get('same_class_event_share', 1.0):.2f}"
              f"  ({time.perf_counter() - t_start:.0f} s)", flush=True)
    result["donors_apart"] = donors_apart(study, (3,) if a.smoke else (3, 10))
    if train_seeds:
        result["transfer"] = transfer(study, a, train_seeds, exclude)
    result |= {**study_record(study), "seconds": time.perf_counter() - t_start,
               "load_average": {"start": load_start, "end": os.getloadavg()}, **provenance()}
    write_result(study, "c2st_collage", result)
    return result


def transfer(study, a, seeds: list[int], exclude_pairs: np.ndarray) -> dict:
    """Train on collages of the training images, test on the held-out images' collages and
    real recordings (``_s2r_train.train_and_score``); mean and spread over ``seeds``."""
    from benchmarks._collage import CollageRenderer
    from flexsnn.data.saccade import load_mnist_images

    from benchmarks._s2r_data import EventList, Subset, training_images
    from benchmarks._s2r_train import Budget, summarize_arm, train_and_score

    budget = Budget(epochs=1, n_train=400) if a.smoke else Budget()
    pairs, fit = study.pairs, study.fit
    images, labels = load_mnist_images()
    ho_images = pairs.image_index[study.held]
    train_images = training_images(ho_images, budget.n_train)
    wanted = np.union1d(train_images, ho_images)
    own = np.full(len(images), -1)
    own[pairs.image_index[fit]] = exclude_pairs[fit]
    t0 = time.perf_counter()
    renderer = CollageRenderer([study.real[i] for i in fit], study.images[fit], nearest=a.transfer_nearest,
                               model=study.model, donor_rates=study.rates[fit])
    recs = renderer.render(images[wanted], seed=a.seed, exclude=own[wanted])
    render_seconds = time.perf_counter() - t0
    print(f"  rendered {len(recs)} collages in {render_seconds:.0f} s", flush=True)
    by_image = [np.empty(0)] * len(images)
    for i, r in zip(wanted, recs):
        by_image[i] = r
    full = EventList(by_image, labels, "collage")
    train_ds = Subset(full, train_images, "collage train")
    gen_test = Subset(full, ho_images, "collage held-out")
    work = Path(a.work) / ("smoke" if a.smoke else "full")
    records = []
    for s in seeds:
        path = work / f"collage-n{a.transfer_nearest}-bg0-s{s}.json"
        records.append(json.loads(path.read_text()) if path.is_file() else train_and_score(
            f"collage-{a.transfer_nearest}", s, train_ds, gen_test, pairs, path, budget,
            record={"nearest": a.transfer_nearest}))
    return {"nearest": a.transfer_nearest, "donors": int(len(fit)), "render_seconds": render_seconds,
            "rendered": len(recs), "budget": budget.__dict__, **summarize_arm(records),
            "per_seed": [{k: v for k, v in r.items() if k != "history"} for r in records]}


if __name__ == "__main__":
    main()
