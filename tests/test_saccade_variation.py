"""saccade-mnist's sensor map and per-recording variations (issue 16, C2ST): the measured
threshold map, per-recording gain, saccade time warp and recording end; each switched off leaves
recordings unchanged, and switching one on does not change the others' draws."""

from __future__ import annotations

import numpy as np
import pytest

from flexsnn.data.saccade import SaccadeGenerator, SaccadeParams, load_mnist_images, saccade_path
from flexsnn.errors import ConfigError

#: the other per-recording randomness switched off, so counts compare cleanly
QUIET = dict(noise_hz=0.0, hot_pixels=(), jitter_us=0.0, latency_tail_us=0.0)


@pytest.fixture(scope="module")
def image():
    x, _ = load_mnist_images()
    return x[0]


def _same(a, b):
    return a.size == b.size and all(np.array_equal(a[f], b[f]) for f in "xypt")


def test_threshold_map_scales_each_pixels_thresholds(image):
    """threshold_map multiplies both thresholds of its pixel: doubling them in the left half of
    the sensor removes events there and nowhere else."""
    p = SaccadeParams(**QUIET)
    plain = SaccadeGenerator(p)
    m = np.ones((34, 34))
    m[:, :17] = 2.0
    mapped = SaccadeGenerator(SaccadeParams(**QUIET, threshold_map=tuple(m.ravel())))
    np.testing.assert_allclose(mapped.c_on.reshape(34, 34)[:, :17], 2 * plain.c_on.reshape(34, 34)[:, :17])
    np.testing.assert_allclose(mapped.c_off.reshape(34, 34)[:, 17:], plain.c_off.reshape(34, 34)[:, 17:])
    a, b = plain.generate(image, 3), mapped.generate(image, 3)
    left_a, left_b = (a["x"] < 17).sum(), (b["x"] < 17).sum()
    assert left_b < 0.7 * left_a
    assert abs(int((b["x"] >= 17).sum()) - int((a["x"] >= 17).sum())) <= 0.05 * (a["x"] >= 17).sum()
    with pytest.raises(ConfigError, match="threshold_map"):
        SaccadeParams(threshold_map=(1.0,) * 10)
    with pytest.raises(ConfigError, match="threshold_map"):
        SaccadeParams(threshold_map=(0.0,) * (34 * 34))


def test_gain_sigma_varies_event_count_per_recording(image):
    """gain_sigma scales a recording's thresholds by exp(sigma * z): the same image's event count
    varies from recording to recording (about sigma in log units), not without it."""
    def log_counts(**kw):
        gen = SaccadeGenerator(SaccadeParams(**QUIET, **kw))
        return np.log([gen.generate(image, i).size for i in range(12)])

    assert log_counts().std() < 0.02
    assert 0.12 < log_counts(gain_sigma=0.3).std() < 0.6
    with pytest.raises(ConfigError, match="gain_sigma"):
        SaccadeParams(gain_sigma=-0.1)


def test_time_warp_moves_the_saccades_in_time():
    """A knot shift of +5 ms on the inner knots delays the digit's path there by 5 ms; with zero
    shift and zero sigma the path is the nominal one; sigma > 0 differs per recording."""
    knots = (0.0, 50e3, 150e3, 250e3, 315e3)
    nominal = SaccadeParams(time_warp_knots_us=knots, time_warp_sigma_us=(0.0,) * 5)
    gen = SaccadeGenerator(nominal)
    px, py = gen.warped_positions(np.zeros(5))
    np.testing.assert_allclose(px, gen.pos_x, atol=1e-5)
    np.testing.assert_allclose(py, gen.pos_y, atol=1e-5)
    late = SaccadeGenerator(SaccadeParams(time_warp_knots_us=knots, time_warp_sigma_us=(0.0,) * 5,
                                          time_warp_shift_us=(0.0, 5e3, 5e3, 5e3, 0.0)))
    lx, ly = late.warped_positions(np.zeros(5))
    t = late.frame_t
    inside = (t >= 55e3) & (t <= 255e3)
    dx, dy = saccade_path(late.params, t[inside] - 5e3)
    np.testing.assert_allclose(lx[inside], late.params.offset_x_px - late.PAD + dx, atol=1e-5)
    np.testing.assert_allclose(ly[inside], late.params.offset_y_px - late.PAD + dy, atol=1e-5)
    jittered = SaccadeGenerator(SaccadeParams(time_warp_knots_us=knots,
                                              time_warp_sigma_us=(0.0, 3e3, 3e3, 3e3, 0.0)))
    z1, z2 = jittered._variation_draws(1)[1], jittered._variation_draws(2)[1]
    assert not np.allclose(jittered.warped_positions(z1)[0], jittered.warped_positions(z2)[0])
    with pytest.raises(ConfigError, match="time_warp_knots_us"):
        SaccadeParams(time_warp_knots_us=(10.0, 5.0), time_warp_sigma_us=(0.0, 0.0))
    with pytest.raises(ConfigError, match="time_warp_sigma_us"):
        SaccadeParams(time_warp_knots_us=(0.0, 5.0), time_warp_sigma_us=(0.0,))


def test_end_cuts_the_recording_and_leaves_the_rest(image):
    """end_us drops the events at and after the end, and only those (the other draws are the
    same); end_jitter_us moves the end per recording."""
    full = SaccadeGenerator(SaccadeParams()).generate(image, 5)
    cut = SaccadeGenerator(SaccadeParams(end_us=300_000.0)).generate(image, 5)
    assert _same(cut, full[full["t"] < 300_000])
    ends = [SaccadeGenerator(SaccadeParams(end_us=300_000.0, end_jitter_us=3000.0)).generate(image, i)["t"][-1]
            for i in range(6)]
    assert np.ptp(ends) > 1000
    with pytest.raises(ConfigError, match="end_us"):
        SaccadeParams(end_us=-1.0)


def test_variations_off_by_default_and_keyed(image):
    """Defaults leave every variation off (a default recording equals one with them explicitly
    off); each one changes the cache key."""
    off = SaccadeParams(threshold_map=(), gain_sigma=0.0, time_warp_knots_us=(),
                        time_warp_sigma_us=(), end_us=0.0)
    assert _same(SaccadeGenerator(off).generate(image, 2), SaccadeGenerator(SaccadeParams()).generate(image, 2))
    keys = {SaccadeParams().key(0), SaccadeParams(gain_sigma=0.1).key(0),
            SaccadeParams(end_us=3e5).key(0), SaccadeParams(threshold_map=(1.1,) * 1156).key(0)}
    assert len(keys) == 4
    # options that are off (the renderer "physical" among them) leave the key out, so adding
    # one keeps the existing caches' names (this is version 9's name; 8's was 1d50fa674296bd68,
    # 7's 889237cf522154a7, 6's d8bb8c9de40634c8, 5's 6346274b4f6e7b7d, 4's 508ac670fcfc6af0)
    assert SaccadeParams().key(0) == "4cb1be2afd529059"


def test_tremor_shakes_the_digit_and_fills_the_pauses(image):
    """tremor_px: an Ornstein-Uhlenbeck shake of about that std, its own per recording; edges
    then fire in the pause between saccades 1 and 2 (90-100 ms), where they are nearly silent
    without it."""
    gen = SaccadeGenerator(SaccadeParams(**QUIET, tremor_px=0.2))
    tx, ty = gen.tremor(1)
    assert tx.shape == gen.frame_t.shape and 0.1 < np.std(np.r_[tx, ty]) < 0.3
    assert not np.allclose(tx, gen.tremor(2)[0])

    def pause_events(**kw):
        ev = SaccadeGenerator(SaccadeParams(**QUIET, **kw)).generate(image, 1)
        return int(((ev["t"] >= 90_000) & (ev["t"] < 100_000)).sum())

    assert pause_events(tremor_px=0.2) > pause_events() + 20
    with pytest.raises(ConfigError, match="tremor_px"):
        SaccadeParams(tremor_px=-0.1)


def test_digit_scale_shrinks_about_the_centre(image):
    """digit_scale s scales the digit about the image centre: its ink by about s**2, its
    centre of mass unchanged."""
    plain = SaccadeGenerator(SaccadeParams(blur_sigma_px=0.0, display_gamma=1.0)).prepare_image(image)
    small = SaccadeGenerator(SaccadeParams(blur_sigma_px=0.0, display_gamma=1.0,
                                           digit_scale=0.5)).prepare_image(image)
    assert small.shape == plain.shape
    assert 0.2 < small.sum() / plain.sum() < 0.3
    c = (np.asarray(plain.shape) - 1) / 2
    yy, xx = np.mgrid[:plain.shape[0], :plain.shape[1]]

    def com(img):
        return np.array([(yy * img).sum(), (xx * img).sum()]) / img.sum()

    np.testing.assert_allclose(com(small) - c, 0.5 * (com(plain) - c), atol=0.3)
    with pytest.raises(ConfigError, match="digit_scale"):
        SaccadeParams(digit_scale=0.1)


def test_noise_map_puts_the_noise_where_the_map_says():
    """noise_map multiplies each pixel's noise rate: all of it in the left half when the right
    half's multipliers are 0; without the map the noise is uniform (the original draw)."""
    m = np.zeros((34, 34))
    m[:, :17] = 2.0
    p = SaccadeParams(noise_hz=5.0, hot_pixels=(), noise_map=tuple(m.ravel()))
    ev = SaccadeGenerator(p).generate(np.zeros((28, 28)), 1)
    assert ev.size > 500 and ev["x"].max() < 17
    assert abs(ev.size - 5.0 * 34 * 34 * 0.315) < 0.1 * 5.0 * 34 * 34 * 0.315
    uniform = SaccadeGenerator(SaccadeParams(noise_hz=5.0, hot_pixels=())).generate(np.zeros((28, 28)), 1)
    assert uniform["x"].max() >= 17
    with pytest.raises(ConfigError, match="noise_map"):
        SaccadeParams(noise_map=(1.0,) * 5)
