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
        c = np.stack([_counts(m.sample(rates, rng))[:, 10:20, 10:20] for _ in range(40)])
        assert abs(c.mean() / 8.0 - 1) < 0.03
        ratios[shape] = c.var() / c.mean()
    assert 0.85 < ratios[1.0] < 1.15
    assert ratios[50.0] < 0.1


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
