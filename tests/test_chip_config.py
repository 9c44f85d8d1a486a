"""The chip's configuration in every training step (issue 15, training/chip_config.py): the extra
pass runs every step at chip_T with the chip's floor, restores the floor, the fine frames sum
into the coarse ones, bad values are named, and the pass changes the gradient."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flexsnn.data.events import SensorSize, make_events
from flexsnn.data.frames import events_to_frames
from flexsnn.errors import ConfigError
from flexsnn.models.neurons import SpikingNeuron
from flexsnn.models.zoo import build_model
from flexsnn.training.chip_config import neuron_floor, train_data_T
from flexsnn.training.schemes import SchemeConfig, input_frames

SENSOR = SensorSize(34, 34, 2)


def _floors(model) -> set:
    return {m.config.min_v_mem for m in model.modules() if isinstance(m, SpikingNeuron)}


def _events(rng, n: int, duration: int):
    x, y = rng.integers(0, 34, n), rng.integers(0, 34, n)
    t = np.sort(rng.integers(0, duration, n))
    t[0], t[-1] = 0, duration  # the recording spans exactly [0, duration] µs
    return make_events(x, y, rng.integers(0, 2, n), t)


# ----------------------------------------------------------------------------- frames
def test_100_fine_bins_summed_into_10_equal_binning_at_10_when_the_duration_divides():
    rng = np.random.default_rng(0)
    for duration in (300_000, 299_900, 123_400):
        ev = _events(rng, 3000, duration)
        fine = torch.from_numpy(events_to_frames(ev, SENSOR, 100))
        coarse = events_to_frames(ev, SENSOR, 10)
        assert np.array_equal(input_frames(fine, 10).numpy(), coarse), duration
        assert np.array_equal(input_frames(fine, 20).numpy(), events_to_frames(ev, SENSOR, 20))


def test_summed_frames_differ_from_binning_at_10_only_near_the_window_edges():
    """Binning floors the window length per T (tonic's rule: w = (t_last - t_0) // T), so at T=100
    a window is up to 9 µs shorter than a tenth of T=10's: events within 9 x i µs of an edge move,
    and events in the last few µs fall outside every fine window. Bounded, and measured on the
    generated recordings in the README (0.1 % of events)."""
    rng = np.random.default_rng(1)
    ev = _events(rng, 20_000, 300_099)  # duration % 100 = 99: the largest window mismatch
    fine = input_frames(torch.from_numpy(events_to_frames(ev, SENSOR, 100)), 10).numpy()
    coarse = events_to_frames(ev, SENSOR, 10)
    moved = np.abs(fine - coarse).sum() / 2 + (coarse.sum() - fine.sum()) / 2
    assert 0 < moved < 0.01 * coarse.sum()
    assert coarse.sum() - fine.sum() >= 0  # the fine binning drops at most the tail


def test_training_data_are_binned_at_chip_T():
    from flexsnn.training.trainer import TrainConfig

    assert train_data_T(TrainConfig()) == 10
    assert train_data_T(TrainConfig(chip_T=100)) == 100
    fine = SchemeConfig(name="mtt", T=10, r_left=9, r_right=40, t_input_min=1, t_input_max=50)
    assert train_data_T(TrainConfig(scheme=fine, chip_T=100)) == 100


# ----------------------------------------------------------------------------- floor
def test_neuron_floor_is_set_inside_and_restored_also_on_error():
    model = build_model("speck3c1fc", T=3)
    assert _floors(model) == {-1.0}
    with neuron_floor(model, -16.0):
        assert _floors(model) == {-16.0}
    assert _floors(model) == {-1.0}
    with pytest.raises(RuntimeError, match="boom"):
        with neuron_floor(model, -16.0):
            raise RuntimeError("boom")
    assert _floors(model) == {-1.0}
    with pytest.raises(ConfigError, match="min_v_mem"):
        with neuron_floor(model, 2.0):
            pass
    assert _floors(model) == {-1.0}


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("kwargs,field", [
    (dict(chip_T=5), "chip_T"),                 # below the data's T (10)
    (dict(chip_T=0), "chip_T"),
    (dict(chip_T=100, chip_floor=1.0), "chip_floor"),
    (dict(chip_T=100, chip_floor=float("nan")), "chip_floor"),
    (dict(chip_T=100, chip_weight=0.0), "chip_weight"),
    (dict(chip_T=100, chip_weight=-1.0), "chip_weight"),
    (dict(chip_T=100, chip_backprop="adjoint"), "chip_backprop"),
    (dict(chip_T=100, qat=True), "chip_backprop"),  # the chip forward needs BPTT
    (dict(chip_T=40, scheme=SchemeConfig(name="mtt", T=10, r_left=9, r_right=40, t_input_min=1,
                                         t_input_max=50)), "chip_T"),  # below the drawn input T max
])
def test_bad_chip_values_are_refused_by_name(kwargs, field):
    from flexsnn.training.trainer import TrainConfig

    with pytest.raises(ConfigError, match=field) as err:
        TrainConfig(**kwargs)
    assert err.value.field == field


def test_sdt_and_mtt_accept_the_chip_pass():
    from flexsnn.training.recipes import chip_finetune_config

    for scheme in ("sdt", "mtt"):
        cfg = chip_finetune_config("base.safetensors", scheme=scheme, deploy_floor=-8.0, chip_T=100)
        assert (cfg.chip_T, cfg.chip_floor, cfg.chip_weight, cfg.chip_backprop) == (100, -8.0, 1.0, "rate_M")
    assert chip_finetune_config("base.safetensors", chip_T=30).chip_floor == -16.0
    assert chip_finetune_config("base.safetensors").chip_T is None


# ----------------------------------------------------------------------------- training
def _base(tmp_path):
    from flexsnn.models.checkpoint import CheckpointMeta, save_checkpoint

    torch.manual_seed(0)
    model = build_model("speck3c1fc", batch_norm=True, T=3)
    meta = CheckpointMeta(model_name="speck3c1fc", model_kwargs=model.zoo_kwargs, neuron_profile="speck-iaf",
                          stages=model.stage_names, scheme={"name": "sdt"}, t_range=(3, 3), dataset="saccade-mnist")
    return save_checkpoint(tmp_path / "base.safetensors", model, meta)


def test_the_chip_pass_runs_every_step_at_chip_T_with_the_chip_floor(tmp_path):
    """A real run (train()): a forward hook on the first neuron layer records the floor and the
    frames of every forward; each step has the scheme's s=2 configurations at the trained floor
    -1 (input summed to T=3) and then one pass at chip_T=9, floor -16; afterwards every floor is -1."""
    from flexsnn.training.recipes import chip_finetune_config
    from flexsnn.training.trainer import train

    cfg = chip_finetune_config(_base(tmp_path), scheme="mtt", s=2, T=3, chip_T=9, chip_floor=-16.0,
                               budget=1e5, epochs=1, limit=16, test_limit=8, batch_size=8, device="cpu")
    seen: list[tuple[int, int, float]] = []

    def record(module, inputs):  # every training forward of a neuron layer: (layer, frames, floor)
        if isinstance(module, SpikingNeuron) and module.training:
            seen.append((id(module), int(inputs[0].shape[0]), module.config.min_v_mem))

    handle = torch.nn.modules.module.register_module_forward_pre_hook(record)
    try:
        res = train(cfg, out_dir=tmp_path / "run")
    finally:
        handle.remove()
    first = seen[0][0]
    seen = [(t, f) for i, t, f in seen if i == first]
    steps = 2  # 16 samples / batch 8
    # rate_M: the chip pass runs the neuron twice (spike pass at T=9, rate pass at T=1)
    chip = [s for s in seen if s[1] == -16.0]
    coarse = [s for s in seen if s[1] == -1.0]
    assert [t for t, _ in chip] == [9, 1] * steps
    assert len(coarse) == 2 * steps and all(t == 3 for t, _ in coarse)
    assert _floors(res.model) == {-1.0}
    row = res.history[-1]
    assert row["chip_synops_per_sample"] > 0 and row["synops_per_sample"] > 0
    assert res.metrics["test_acc"] >= 0  # evaluated at T=3 after the chip passes


def _step(tmp_path, chip_T=None, chip_weight=1.0, backprop="rate_M"):
    """One real optimizer step of the recipe's MTT fine-tune on 8 generated recordings; returns
    (weights before, weights after, grads)."""
    from flexsnn.data.frames import FrameDataset
    from flexsnn.data.registry import load_event_dataset
    from flexsnn.training.chip_session import ChipSession
    from flexsnn.training.losses import build_loss
    from flexsnn.training.recipes import chip_finetune_config
    from flexsnn.training.schemes import sample_configs, step_generator
    from flexsnn.training.trainer import build_optimizer, build_training_model, get_step_fn, train_step

    cfg = chip_finetune_config(_base(tmp_path), scheme="mtt", s=2, T=3, chip_T=chip_T, chip_weight=chip_weight,
                               chip_backprop=backprop, budget=1e5, device="cpu")
    ds = load_event_dataset("saccade-mnist", split="train", seed=0, limit=8)
    frames = FrameDataset(ds, T=train_data_T(cfg))
    x = torch.stack([torch.from_numpy(frames.frames(i)[0]) for i in range(8)], 1)
    y = torch.tensor([frames.frames(i)[1] for i in range(8)])
    model, _, _ = build_training_model(cfg)
    model.train()
    chip = ChipSession(model, cfg, build_loss("ce"))
    chip_pass = chip.config_pass(get_step_fn(cfg.chip_backprop))
    opt, _ = build_optimizer(model, cfg, 10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    configs = sample_configs(cfg.scheme, model.num_stages, step_generator(0, 0))
    with chip.meter:
        st = train_step(model, x, y, configs, chip.loss, get_step_fn("bptt"), opt, tfsnn=model,
                        resample_input=chip_pass is not None, chip_pass=chip_pass)
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return before, model.state_dict(), grads, st


@pytest.mark.slow
def test_the_chip_pass_adds_a_nonzero_gradient_and_changes_the_step(tmp_path):
    b0, plain, g_plain, st_plain = _step(tmp_path)
    b1, chip, g_chip, st_chip = _step(tmp_path, chip_T=9)
    _, heavy, g_heavy, _ = _step(tmp_path, chip_T=9, chip_weight=4.0)
    assert all(torch.equal(b0[k], b1[k]) for k in b0)  # same start
    assert len(st_plain.configs) == 2 and st_chip.configs[-1] == (9, 9, 9, 9)
    diff = {n: g_chip[n] - g_plain[n] for n in g_plain}
    assert any(float(d.abs().max()) > 0 for d in diff.values())  # the chip pass's own gradient
    assert sum(float(d.abs().sum()) for d in diff.values()) > 0
    assert any(not torch.equal(plain[k], chip[k]) for k in plain)
    assert any(not torch.equal(chip[k], heavy[k]) for k in chip)
    # BPTT for the chip pass gives a gradient of the same direction as rate_M
    _, _, g_bptt, _ = _step(tmp_path, chip_T=9, backprop="bptt")
    d_rate = torch.cat([(g_chip[n] - g_plain[n]).flatten() for n in g_plain])
    d_bptt = torch.cat([(g_bptt[n] - g_plain[n]).flatten() for n in g_plain])
    assert float(torch.nn.functional.cosine_similarity(d_rate, d_bptt, dim=0)) > 0.3


def test_cli_options_reach_the_config(tmp_path, capsys):
    from flexsnn.cli import main
    from flexsnn.commands.train import resolve_train_config

    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    for opt in ("--chip-T", "--chip-floor", "--chip-weight", "--chip-backprop"):
        assert opt in out
    cfg = resolve_train_config(None, {"chip_T": 100, "chip_floor": -8.0, "chip_weight": 0.5,
                                      "chip_backprop": "rate_S"}, {})
    assert (cfg.chip_T, cfg.chip_floor, cfg.chip_weight, cfg.chip_backprop) == (100, -8.0, 0.5, "rate_S")
    assert main(["train", "--chip-T", "5", "--out", str(tmp_path / "x")]) == 1
    assert "chip_T" in capsys.readouterr().err
    assert main(["train", "--chip-T", "100", "--chip-weight", "0", "--out", str(tmp_path / "y")]) != 0
