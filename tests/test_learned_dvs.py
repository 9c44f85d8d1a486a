"""The learned image-to-events renderer: the shipped model, its sampler and its place in
saccade-mnist."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from flexsnn.data.learned_dvs import DEFAULT_WEIGHTS, LearnedDVS, SamplerParams, save_weights
from flexsnn.data.saccade import SaccadeGenerator, SaccadeParams, load_mnist_images
from flexsnn.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def model() -> LearnedDVS:
    return LearnedDVS()


#: The synthetic rates below are all signal: none of them is the model's background.
NO_NOISE = 0.0


def _counts(events: np.ndarray) -> np.ndarray:
    c = np.zeros((2, 34, 34))
    np.add.at(c, (events["p"].astype(np.int64), events["y"], events["x"]), 1.0)
    return c


def test_rates_follow_the_digit(model):
    images, _ = load_mnist_images()
    rates = model.rates(images[:3])
    assert rates.shape == (3, 2, model.n_bins, 34, 34) and (rates > 0).all()
    # events come where the digit is: the inked region (grown by the saccades) holds most rate
    ink = np.pad(images[0] > 0.3, 3)
    per_pixel = rates[0].sum((0, 1))
    assert per_pixel[ink].mean() > 5 * per_pixel[~ink].mean()
    # a blank image gives only the sensor's background
    assert model.rates(np.zeros((1, 28, 28))).sum() < 0.05 * rates[0].sum()


def test_sample_is_seeded_sorted_and_ends_at_its_duration(model):
    images, _ = load_mnist_images()
    rates = model.rates(images[:1])[0]
    a = model.sample(rates, np.random.default_rng(3))
    b = model.sample(rates, np.random.default_rng(3))
    c = model.sample(rates, np.random.default_rng(4))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert (np.diff(a["t"]) >= 0).all() and a["t"][0] >= 0
    assert a["x"].max() < 34 and a["y"].max() < 34 and set(np.unique(a["p"])) <= {0, 1}
    s = model.sampler
    assert abs(a["t"][-1] - s.duration_mean_us) < 6 * s.duration_std_us + 1
    # the expected count, within a few percent
    assert abs(len(a) / rates.sum() - 1) < 0.1


def test_renewal_shape_sets_the_count_scatter(model):
    """Shape 1 is Poisson (variance = mean); a large shape fires almost regularly."""
    rates = np.zeros((2, model.n_bins, 34, 34))
    rates[:, :, 10:20, 10:20] = 8.0 / model.n_bins  # 8 expected events per pixel and polarity
    ratios = {}
    for shape in (1.0, 50.0):
        m = model.with_sampler(dataclasses.replace(model.sampler, renewal_shape=shape,
                                                   field_sigma=0.0, gain_sigma=0.0))
        rng = np.random.default_rng(0)
        c = np.stack([_counts(m.sample(rates, rng, noise=NO_NOISE))[:, 10:20, 10:20] for _ in range(40)])
        assert abs(c.mean() / 8.0 - 1) < 0.03
        ratios[shape] = c.var() / c.mean()
    assert 0.85 < ratios[1.0] < 1.15
    assert ratios[50.0] < 0.1


def _bin_totals(events: np.ndarray, n_bins: int) -> np.ndarray:
    """``[2, n_bins]`` events per polarity and bin of ``t / t_last`` (how the fit bins them)."""
    b = np.minimum(events["t"] * n_bins // (int(events["t"][-1]) + 1), n_bins - 1)
    out = np.zeros((2, n_bins))
    np.add.at(out, (events["p"].astype(np.int64), b), 1.0)
    return out


def test_sampled_events_land_in_the_bins_of_their_rates(model):
    """Each bin holds its expected share, the last one too. (Stretching the recording so that it
    ends at its last event, as the sampler once did, put 30 % too many events in the last bin of
    a profile that tails off, and pushed the saccades' edges late.)"""
    nb = model.n_bins
    profile = np.ones(nb)
    profile[-3:] = [0.3, 0.1, 0.02]  # activity dies away at the end, as in the real recordings
    rates = np.zeros((2, nb, 34, 34))
    rates[:, :, 8:26, 8:26] = 0.05 * profile[:, None, None]
    m = model.with_sampler(dataclasses.replace(model.sampler, field_sigma=0.0, gain_sigma=0.0))
    m.time_factor = None
    rng = np.random.default_rng(1)
    totals = sum(_bin_totals(m.sample(rates, rng, noise=NO_NOISE), nb) for _ in range(60))
    expected = 60 * rates.sum((2, 3))
    ratio = totals / expected
    assert abs(ratio[:, :-3].mean() - 1) < 0.02 and np.abs(ratio[:, :-3] - 1).max() < 0.12
    assert abs(totals[:, -3:].sum() / expected[:, -3:].sum() - 1) < 0.1
    assert abs(ratio[:, -8:-3].mean() - 1) < 0.05


def test_time_gain_scatters_only_the_bins_its_factor_names(model):
    nb = model.n_bins
    rates = np.full((2, nb, 34, 34), 0.2)
    m = model.with_sampler(dataclasses.replace(model.sampler, field_sigma=0.0, gain_sigma=0.0))
    factor = np.zeros((2 * nb, 1))
    factor[[3, nb + 3], 0] = 0.5  # bin 3, both polarities, together
    m.time_factor = factor
    rng = np.random.default_rng(2)
    t = np.log(np.stack([_bin_totals(m.sample(rates, rng, noise=NO_NOISE), nb) for _ in range(80)]))  # [80, 2, nb]
    assert 0.35 < t[:, 0, 3].std() < 0.65 and t[:, 0, 10].std() < 0.15
    assert np.corrcoef(t[:, 0, 3], t[:, 1, 3])[0, 1] > 0.8
    assert abs(np.exp(t[:, :, 3]).mean() / np.exp(t[:, :, 10]).mean() - 1) < 0.15  # mean kept
    g = m.time_gain(np.random.default_rng(0))
    assert g.shape == (2, nb, 1, 1) and np.allclose(np.delete(g[0, :, 0, 0], 3), 1.0)


def test_bursts_gather_a_pixels_events_and_keep_the_time_profile(model):
    nb = model.n_bins
    rates = np.zeros((2, nb, 34, 34))
    rates[:, :, 10:20, 10:20] = 0.3  # 9 expected events per pixel, polarity and recording
    base = dataclasses.replace(model.sampler, field_sigma=0.0, gain_sigma=0.0)
    plain = model.with_sampler(base)
    plain.time_factor = None
    bursty = model.with_sampler(dataclasses.replace(base, burst_size=3.0, burst_spread_us=0.0,
                                                    burst_interval_us=None))  # followers at their lead
    bursty.time_factor = None
    a = [plain.sample(rates, np.random.default_rng(i), noise=NO_NOISE) for i in range(30)]
    b = [bursty.sample(rates, np.random.default_rng(i), noise=NO_NOISE) for i in range(30)]
    assert [len(x) for x in a] == [len(x) for x in b]  # the same draws up to the bursts: same counts
    profile_a, profile_b = sum(_bin_totals(x, nb) for x in a), sum(_bin_totals(x, nb) for x in b)
    assert abs(profile_b.sum() / profile_a.sum() - 1) < 1e-9
    assert np.abs(profile_b[:, 1:-1] / profile_a[:, 1:-1] - 1).mean() < 0.05

    def distinct_times_per_event(recs):
        keys = [np.unique(np.stack([r["x"], r["y"], r["p"], r["t"]])[:, r["p"] >= 0], axis=1).shape[1] for r in recs]
        return sum(keys) / sum(len(r) for r in recs)

    assert distinct_times_per_event(a) > 0.95
    assert 0.3 < distinct_times_per_event(b) < 0.45  # ceil(n / 3) bursts of 3 events each
    with pytest.raises(DataError, match="burst_size"):
        dataclasses.replace(base, burst_size=0.5).check("x")


def test_trains_space_a_bursts_events_at_their_intervals_and_keep_the_time_profile(model):
    """With ``burst_interval_us`` set (version 9), a burst's followers come one after another
    at Gamma intervals of that mean, centred on the lead, instead of within the scatter: a
    pixel's intervals then sit near the mean, almost none under a quarter of it, and the
    expected time profile is kept."""
    nb = model.n_bins
    rates = np.zeros((2, nb, 34, 34))
    rates[:, :, 10:20, 10:20] = 0.3
    base = dataclasses.replace(model.sampler, field_sigma=0.0, gain_sigma=0.0, burst_size=3.0,
                               burst_spread_us=100.0, burst_interval_us=None)
    scattered = model.with_sampler(base).with_time_factor(None)
    trains = model.with_sampler(dataclasses.replace(base, burst_interval_us=3000.0,
                                                    burst_interval_shape=8.0)).with_time_factor(None)
    a = [scattered.sample(rates, np.random.default_rng(i), noise=NO_NOISE) for i in range(30)]
    b = [trains.sample(rates, np.random.default_rng(i), noise=NO_NOISE) for i in range(30)]
    assert [len(x) for x in a] == [len(x) for x in b]

    def intervals(recs):  # µs between consecutive events of one pixel and polarity
        out = []
        for r in recs:
            ch = (r["p"].astype(np.int64) * 34 + r["y"]) * 34 + r["x"]
            o = np.lexsort((r["t"], ch))
            out.append(np.diff(r["t"][o].astype(np.int64))[np.diff(ch[o]) == 0])
        return np.concatenate(out)

    ia, ib = intervals(a), intervals(b)
    assert (ia < 750).mean() > 0.4  # scattered followers: within about 100 µs of their lead
    assert (ib < 750).mean() < 0.05 and 0.2 < ((ib > 1500) & (ib < 4500)).mean()
    profile_a, profile_b = sum(_bin_totals(x, nb) for x in a), sum(_bin_totals(x, nb) for x in b)
    assert np.abs(profile_b[:, 1:-1] / profile_a[:, 1:-1] - 1).mean() < 0.05
    with pytest.raises(DataError, match="burst_interval_us"):
        dataclasses.replace(base, burst_interval_us=0.0).check("x")


def test_train_offsets_are_running_sums_centred_on_each_burst():
    from flexsnn.data.learned_dvs import _train_offsets

    lead = np.array([0, 1, 0, 1, 0, 5])  # bursts 0 (three events), 1 (two) and 5 (one)
    gaps = np.array([0.0, 0.0, 2.0, 3.0, 4.0, 0.0])
    # burst 0 sits at 0, 2, 6 (mean 8/3); burst 1 at 0, 3 (mean 1.5); burst 5 alone
    assert np.allclose(_train_offsets(lead, gaps), [-8 / 3, -1.5, 2 - 8 / 3, 1.5, 6 - 8 / 3, 0.0])


def test_background_drawn_apart_fires_as_poisson_outside_the_bursts(model):
    """With ``noise_shape`` set, the image-independent background fires as its own renewal
    process (shape 1: Poisson) and stays out of the signal's bursts, while the signal keeps its
    regular firing; without it, the background fires as regularly as the signal (before
    version 8)."""
    nb = model.n_bins
    noise = np.zeros((2, nb, 34, 34))
    noise[:, :, :10] = 9.0 / nb  # 9 expected background events per pixel and polarity
    rates = noise.copy()
    rates[:, :, 20:30, 10:20] = 9.0 / nb  # and 9 of signal elsewhere
    base = dataclasses.replace(model.sampler, field_sigma=0.0, gain_sigma=0.0, renewal_shape=50.0,
                               burst_size=3.0, burst_spread_us=0.0, burst_interval_us=None, noise_shape=None)
    together = model.with_sampler(base).with_time_factor(None)
    apart = model.with_sampler(dataclasses.replace(base, noise_shape=1.0)).with_time_factor(None)

    def draws(m):
        recs = [m.sample(rates, np.random.default_rng(i), noise=noise) for i in range(40)]
        c = np.stack([_counts(r) for r in recs])
        return recs, c[:, :, :10], c[:, :, 20:30, 10:20]

    def distinct_times_per_event(recs, rows):
        sel = [r[(r["y"] >= rows[0]) & (r["y"] < rows[1])] for r in recs]
        keys = [np.unique(np.stack([r["x"], r["y"], r["p"], r["t"]]), axis=1).shape[1] for r in sel]
        return sum(keys) / sum(len(r) for r in sel)

    recs_t, bg_t, sig_t = draws(together)
    recs_a, bg_a, sig_a = draws(apart)
    for c in (bg_t, bg_a, sig_t, sig_a):
        assert abs(c.mean() / 9.0 - 1) < 0.05
    assert bg_t.var() / bg_t.mean() < 0.1 and 0.85 < bg_a.var() / bg_a.mean() < 1.15
    assert sig_a.var() / sig_a.mean() < 0.1
    assert distinct_times_per_event(recs_t, (0, 10)) < 0.45  # gathered into bursts of 3
    assert distinct_times_per_event(recs_a, (0, 10)) > 0.95  # each background event on its own
    assert distinct_times_per_event(recs_a, (20, 30)) < 0.45  # the signal still bursts
    # by default the model's own background is the part drawn apart; it is part of rates()
    images, _ = load_mnist_images()
    own = model.with_sampler(dataclasses.replace(model.sampler, noise_shape=1.0))
    blank = own.rates(np.zeros((1, 28, 28)))[0]
    np.testing.assert_allclose(own.noise_rates(), blank - own.rate_parts(np.zeros((1, 28, 28)))[0][0].double().numpy(),
                               rtol=1e-5, atol=1e-9)
    a = own.sample(own.rates(images[:1])[0], np.random.default_rng(5))
    b = own.sample(own.rates(images[:1])[0], np.random.default_rng(5), noise=own.noise_rates())
    assert np.array_equal(a, b)
    with pytest.raises(DataError, match="noise_shape"):
        dataclasses.replace(model.sampler, noise_shape=0.0).check("x")


def test_weights_round_trip_and_bad_files(model, tmp_path):
    path = save_weights(tmp_path / "m.npz", model.arrays, SamplerParams(renewal_shape=2.5), {"a": 1})
    again = LearnedDVS(path)
    assert again.sampler.renewal_shape == 2.5 and again.meta == {"a": 1}
    assert np.array_equal(again.arrays["conv2_weight"], model.arrays["conv2_weight"])
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="bad.npz"):
        LearnedDVS(tmp_path / "bad.npz")
    bad = save_weights(tmp_path / "neg.npz", model.arrays, SamplerParams(renewal_shape=-1.0))
    with pytest.raises(DataError, match="renewal_shape"):
        LearnedDVS(bad)
    with pytest.raises(ValueError, match="lacks"):
        save_weights(tmp_path / "x.npz", {}, SamplerParams())
    nb = model.n_bins
    with_factor = save_weights(tmp_path / "tf.npz", {**model.arrays, "time_factor": np.ones((2 * nb, 3))},
                               SamplerParams())
    assert LearnedDVS(with_factor).time_factor.shape == (2 * nb, 3)
    assert LearnedDVS(path).time_factor is None  # a model without one samples without a time gain
    wrong = save_weights(tmp_path / "tf_bad.npz", {**model.arrays, "time_factor": np.ones((nb, 3))},
                         SamplerParams())
    with pytest.raises(DataError, match="time_factor"):
        LearnedDVS(wrong)


def test_other_arrays_replace_the_fitted_ones_and_the_cached_background(model):
    before = model.noise_rates()  # fills the cache that a copy would otherwise carry over
    louder = model.with_arrays({**model.arrays, "noise": model.arrays["noise"] + np.log(2.0)})
    assert np.allclose(louder.noise_rates(), 2 * before, rtol=1e-5)
    assert np.allclose(model.noise_rates(), before) and louder.sampler == model.sampler
    with pytest.raises(DataError, match="conv2_weight of the shape"):
        model.with_arrays({**model.arrays, "conv2_weight": np.zeros((4, 24, 7, 7))})
    with pytest.raises(DataError, match="gain of the shape None"):
        model.with_arrays({k: v for k, v in model.arrays.items() if k != "gain"})


def test_sensor_patterns_scale_the_signal_and_the_noise_where_they_say(model, tmp_path):
    images, _ = load_mnist_images()
    plain = model.with_patterns({})
    signal, log_noise = plain.rate_parts(images[:2])
    nb = model.n_bins
    noise_pt = np.zeros((2, nb, 34, 34), np.float32)
    gain_pt = np.zeros((2, nb, 34, 34), np.float32)
    noise_pt[1, 4, 0, 0] = np.log(3.0)  # the corner's OFF background triples in bin 4
    gain_pt[0, 7] = np.log(0.5)  # the ON signal halves in bin 7, everywhere
    path = save_weights(tmp_path / "pt.npz", {**model.arrays, "noise_pt": noise_pt, "gain_pt": gain_pt},
                        model.sampler)
    patterned = LearnedDVS(path)
    signal2, log_noise2 = patterned.rate_parts(images[:2])
    np.testing.assert_allclose(signal2[:, 0, 7].numpy(), 0.5 * signal[:, 0, 7].numpy(), rtol=1e-6)
    np.testing.assert_array_equal(signal2[:, 1].numpy(), signal[:, 1].numpy())
    assert float(log_noise2[0, 1, 4, 0, 0] - log_noise[0, 1, 4, 0, 0]) == pytest.approx(np.log(3.0))
    assert float((log_noise2 - log_noise).abs().sum()) == pytest.approx(np.log(3.0), rel=1e-5)
    np.testing.assert_allclose(patterned.rates(images[:2]), (signal2 + log_noise2.exp()).double().numpy())
    for bad, why in ((np.zeros((2, nb + 1, 34, 34)), "shape"), (np.full((2, nb, 34, 34), np.nan), "finite")):
        wrong = save_weights(tmp_path / "pt_bad.npz", {**model.arrays, "noise_pt": bad}, model.sampler)
        with pytest.raises(DataError, match=f"noise_pt has the shape .*{why}|noise_pt .*{why}"):
            LearnedDVS(wrong)


def test_saccade_params_renderer():
    physical, learned = SaccadeParams(), SaccadeParams(renderer="learned")
    assert physical.key(0) != learned.key(0) and learned.key(0) != learned.key(1)
    with pytest.raises(ConfigError, match="renderer"):
        SaccadeParams(renderer="gan")
    with pytest.raises(ConfigError, match="learned renderer"):
        SaccadeParams(renderer="learned", width=32)
    assert DEFAULT_WEIGHTS.is_file()


def test_generator_uses_the_learned_model_alike_alone_and_in_bulk():
    images, _ = load_mnist_images()
    gen = SaccadeGenerator(SaccadeParams(renderer="learned"), seed=0)
    bulk = gen.generate_many(images[:3], [0, 1, 2])
    assert np.array_equal(bulk[2], gen.generate(images[2], 2))
    assert 1000 < len(bulk[0]) < 10000


@pytest.mark.realdata
def test_fit_script_smoke_writes_a_loadable_model(nmnist_small, tmp_path):
    """``benchmarks/fit_learned_dvs.py --smoke`` fits on real pairs and writes a model the
    renderer loads, and a JSON with the held-out check."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, str(repo / "benchmarks" / "fit_learned_dvs.py"), "--smoke", "--real",
         str(nmnist_small), "--out", str(tmp_path / "m.npz"), "--json", str(tmp_path / "fit.json")],
        capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads((tmp_path / "fit.json").read_text())
    assert res["n_fit"] == 100 and res["n_held_out"] == 100
    assert 0.0 <= res["c2st_accuracy"] <= 1.0 and "count_image" in res["c2st_views"]
    assert set(res["sampler_fit"]["target"]) == {"var_over_mean", "neighbour_corr", "on_off_corr",
                                                 "recording_gain_sd"}
    fitted = LearnedDVS(tmp_path / "m.npz")
    assert fitted.meta["smoke"] is True and fitted.n_bins == 30
    assert fitted.sampler.renewal_shape == pytest.approx(res["sampler"]["renewal_shape"])
    assert fitted.time_factor.shape == (60, res["time_gain_fit"]["rank"])
    for side in ("real", "generated", "generated_without_time_gain"):
        assert 0 < res["held_out_frame_stats"][side]["single_event_fraction"] < 1
    trains = res["burst_interval_fit"]  # fitted intervals match the real ones better than scattered followers
    assert fitted.sampler.burst_interval_us == pytest.approx(res["sampler"]["burst_interval_us"])
    assert trains["l1_fitted"] < trains["l1_scattered"]
    assert trains["held_out_l1"]["fitted"] < trains["held_out_l1"]["scattered"]
    # the sampler's parts alone, on the rates of that fit, fitted on 60 of the 100 fit pairs
    again = subprocess.run(
        [sys.executable, str(repo / "benchmarks" / "fit_learned_dvs.py"), "--smoke", "--real",
         str(nmnist_small), "--rates-from", str(tmp_path / "m.npz"), "--out", str(tmp_path / "m2.npz"),
         "--json", str(tmp_path / "fit2.json"), "--fit-pairs", "60"], capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    refit = LearnedDVS(tmp_path / "m2.npz")
    assert np.array_equal(refit.arrays["conv2_weight"], fitted.arrays["conv2_weight"])
    res2 = json.loads((tmp_path / "fit2.json").read_text())
    assert res2["rates"]["reused_from"] == str(tmp_path / "m.npz")
    assert (res2["n_fit"], res2["n_c2st_fit"]) == (60, 100) and len(refit.meta["fit_mnist_train_indices"]) == 60
    too_many = subprocess.run(
        [sys.executable, str(repo / "benchmarks" / "fit_learned_dvs.py"), "--smoke", "--real",
         str(nmnist_small), "--fit-pairs", "101", "--out", str(tmp_path / "m3.npz"), "--json",
         str(tmp_path / "fit3.json")], capture_output=True, text=True, timeout=600)
    assert too_many.returncode != 0 and "--fit-pairs 101: the fit half has 100 pairs" in too_many.stderr


def test_frame_stats_see_a_pixel_whose_events_move_between_frames_as_a_whole():
    import importlib.util
    from pathlib import Path

    from flexsnn.data.events import EVENT_DTYPE

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "fit_learned_dvs.py"
    spec = importlib.util.spec_from_file_location("fit_learned_dvs", script)
    fit = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fit)
    rates = np.zeros((40, 2, 30, 34, 34))
    rates[:, 1, 3:9, 5:15, 5:15] = 1.0  # 3 expected ON events per pixel in frames 1 and 2
    rng = np.random.default_rng(0)

    def recording(together: bool) -> np.ndarray:
        ev = []
        for y in range(5, 15):
            for x in range(5, 15):
                # a pixel's 6 events all in frame 1 or all in frame 2, or Poisson counts in each
                n = (6, 0)[::rng.choice([-1, 1])] if together else rng.poisson(3.0, 2)
                for f, k in zip((1, 2), n):
                    ev += [(x, y, 1, int(f * 30_000 + rng.integers(1, 29_000))) for _ in range(k)]
        ev += [(0, 0, 0, 0), (0, 0, 0, 299_999)]  # the recording spans [0, 300) ms
        out = np.array(sorted(ev, key=lambda e: e[3]), dtype=[("x", "i8"), ("y", "i8"), ("p", "i8"), ("t", "i8")])
        rec = np.empty(len(out), dtype=EVENT_DTYPE)
        for k in ("x", "y", "p", "t"):
            rec[k] = out[k]
        return rec

    moving = fit.frame_stats([recording(True) for _ in range(40)], rates)
    scattered = fit.frame_stats([recording(False) for _ in range(40)], rates)
    assert moving["adjacent_frame_corr"] < -0.9 and abs(scattered["adjacent_frame_corr"]) < 0.15
    assert moving["single_event_fraction"] < 0.02 < scattered["single_event_fraction"]  # the two end markers


def test_shipped_fit_is_the_one_its_json_describes():
    """The committed fit report names the shipped model's sampler (a refit rewrites both)."""
    import json
    from pathlib import Path

    report = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "learned_dvs_fit.json"
    res = json.loads(report.read_text())
    shipped = LearnedDVS()
    assert res["sampler"] == pytest.approx(shipped.sampler.__dict__)
    assert shipped.meta["smoke"] is False and res["c2st_accuracy"] < 1.0


def test_demo_marks_the_real_recordings_the_generator_was_fitted_on(tmp_path):
    from types import SimpleNamespace

    from flexsnn.apps.demo_data import recording_in_generator_fit
    from flexsnn.data.saccade import DATASET_PARAMS

    fitted = LearnedDVS().meta["fit_mnist_train_indices"]
    assert len(fitted) > 400
    outside = next(i for i in range(1000) if i not in set(fitted))
    files = [tmp_path / "Train" / "5" / f"{fitted[0] + 1:05d}.bin",
             tmp_path / "Train" / "0" / f"{outside + 1:05d}.bin"]
    real = SimpleNamespace(files=files)
    mask = recording_in_generator_fit(real, SimpleNamespace(params=DATASET_PARAMS))
    assert mask.tolist() == [True, False]
    # data from the physical renderer: the real recordings are not part of any fit
    assert recording_in_generator_fit(real, SimpleNamespace(params=SaccadeParams())) is None
    test_files = SimpleNamespace(files=[tmp_path / "Test" / "5" / "00001.bin"])
    assert recording_in_generator_fit(test_files, SimpleNamespace(params=DATASET_PARAMS)) is None
