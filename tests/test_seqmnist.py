"""Sequential MNIST data, the seqfc TFSNN, the RNN baseline, and the non-increasing scheme."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flexsnn.data.seqmnist import SeqMNIST, images_to_sequences, seq_length, seqmnist_loader
from flexsnn.errors import ConfigError
from flexsnn.models.checkpoint import CheckpointMeta, load_model, save_checkpoint
from flexsnn.models.seq_models import RNNClassifier
from flexsnn.models.zoo import build_model
from flexsnn.training.schemes import SchemeConfig, is_non_increasing, sample_configs


def test_raster_order_rows_and_pixel_groups():
    img = np.arange(784, dtype=np.float64).reshape(1, 28, 28)
    rows = images_to_sequences(img, 28)
    assert rows.shape == (1, 28, 1, 1, 28) and rows.dtype == np.float32
    np.testing.assert_array_equal(rows[0, 3, 0, 0], img[0, 3])            # step 3 = row 3
    groups = images_to_sequences(img, 16)
    assert groups.shape == (1, 49, 1, 1, 16)
    np.testing.assert_array_equal(groups[0, :, 0, 0].ravel(), img.ravel())  # raster order kept
    assert seq_length(1) == 784
    with pytest.raises(ConfigError, match="divisor of 784"):
        seq_length(5)


def test_dataset_split_and_loader():
    train = SeqMNIST(split="train", limit=40)
    test = SeqMNIST(split="test", limit=20)
    assert len(train) == 40 and len(test) == 20 and train.T == 28
    assert not set(train.image_index) & set(test.image_index)
    assert np.bincount(train.labels, minlength=10).tolist() == [4] * 10
    x, y = next(iter(seqmnist_loader(dataset=test, batch_size=8)))
    assert x.shape == (8, 28, 1, 1, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0


def test_seqfc_forward_at_non_increasing_config():
    model = build_model("seqfc", T=28)
    x = torch.rand(28, 3, 1, 1, 28)
    assert model(x).shape == (28, 3, 10)
    model.set_temporal_config((28, 7))
    assert model(x).shape == (7, 3, 10)
    cfg = model.stages[0].layers[2].config
    assert cfg.decay == 0.99 and cfg.profile == "paper-lif"
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == 28 * 64 + 64 + 64 * 64 + 64 + 64 * 10 + 10


def test_seqfc_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model = build_model("seqfc", in_features=16, T=49)
    path = tmp_path / "seq.safetensors"
    meta = CheckpointMeta(model_name="seqfc", model_kwargs=model.zoo_kwargs, neuron_profile="paper-lif",
                          stages=model.stage_names)
    save_checkpoint(path, model, meta)
    loaded, _ = load_model(path)
    x = torch.rand(49, 2, 1, 1, 16) * 3
    torch.testing.assert_close(loaded(x), model(x))


@pytest.mark.parametrize("kind", ["rnn", "gru"])
def test_rnn_baseline(kind):
    model = RNNClassifier(kind=kind, in_features=28, hidden=64, num_layers=2)
    out = model(torch.rand(28, 5, 1, 1, 28))
    assert out.shape == (5, 10)
    with pytest.raises(ConfigError):
        model(torch.rand(28, 5, 16))


@settings(max_examples=150, deadline=None)
@given(
    name=st.sampled_from(["nmt", "mtt"]),
    kind=st.sampled_from(["event", "static"]),
    T=st.integers(1, 30),
    t_min=st.integers(1, 30),
    extra=st.integers(0, 10),
    n_stages=st.integers(1, 9),
    seed=st.integers(0, 2**31 - 1),
)
def test_non_increasing_sampling_never_increases(name, kind, T, t_min, extra, n_stages, seed):
    """Property (issue 10): with non_increasing=True the training sampler never produces a
    configuration where a later stage runs at more steps than an earlier one, and the first
    stage is the input's T."""
    t_min = min(t_min, T)
    scheme = SchemeConfig(name=name, T=T, data_kind=kind, t_min=t_min, t_max=T + extra, s=4,
                          non_increasing=True)
    for cfg in sample_configs(scheme, n_stages, np.random.default_rng(seed)):
        assert len(cfg) == n_stages and min(cfg) >= 1
        assert is_non_increasing(cfg), cfg
        assert cfg[0] == scheme.input_T


@pytest.mark.slow
def test_seqmnist_benchmark_smoke(tmp_path):
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "seqmnist.py"
    spec = importlib.util.spec_from_file_location("_bench_seqmnist", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--smoke", "--out", str(tmp_path), "--ablation-seeds", "0"]) == 0
    data = json.loads((tmp_path / "seqmnist.json").read_text())
    for key in ("rnn", "sdt", "mtt"):
        assert 0.0 <= data[key] <= 1.0
    assert data["hidden"] == 64 and data["epochs"] == 1 and "machine" in data
    assert 0.0 <= data["gru"] <= 1.0 and all(len(data["history"][k]) == 1 for k in ("rnn", "gru", "sdt", "mtt"))
    assert data["history"]["mtt"][-1] == data["mtt"] and "row by row" in data["input_format"]
    assert data["snn_kwargs"] == {"recurrent": True} and data["params"]["snn"] <= data["params"]["rnn"]
    assert set(data["ablation"]) == {"feedforward", "recurrent_learn_decay"}
    assert data["ablation"]["feedforward"]["params"] < data["params"]["snn"]
    assert (tmp_path / "seqmnist.png").stat().st_size > 0
    assert module.main(["--smoke", "--out", str(tmp_path), "--ablation-only", "--ablation-seeds", "0",
                        "--name", "abl"]) == 0
    abl = json.loads((tmp_path / "abl.json").read_text())
    assert "rnn" not in abl and abl["ablation"]["recurrent_learn_decay"]["params"] == data["params"]["rnn"]


# --------------------------------------------------------------------------- recurrent seqfc (issue 18)
def _hand_recurrent(x: torch.Tensor, w_rec: torch.Tensor, decay: float) -> torch.Tensor:
    """paper-lif with a recurrent current, written out: v = decay*u + x_t + W s_{t-1}."""
    u = torch.zeros(x.shape[1:])
    s = torch.zeros(x.shape[1:])
    out = []
    for t in range(x.shape[0]):
        v = decay * u + x[t] + s @ w_rec.T
        s = (v > 1.0).float()
        u = v * (1 - s)
        out.append(s)
    return torch.stack(out)


def test_recurrent_neuron_matches_hand_loop_and_recurrence_matters():
    from flexsnn.models.neurons import RecurrentSpikingNeuron, make_neuron, neuron_config

    torch.manual_seed(0)
    cfg = neuron_config("paper-lif", decay=0.9)
    neuron = RecurrentSpikingNeuron(cfg, 6)
    x = torch.rand(12, 4, 6) * 1.5
    with torch.no_grad():
        neuron.recurrent.weight.copy_(torch.randn(6, 6))
        out = neuron(x)
        assert out.shape == (12, 4, 6)
        torch.testing.assert_close(out, _hand_recurrent(x, neuron.recurrent.weight, 0.9))
        plain = make_neuron("paper-lif", decay=0.9)(x)
        assert not torch.equal(out, plain)  # the recurrent current changes the spikes
        neuron.recurrent.weight.zero_()
        neuron.reset()
        torch.testing.assert_close(neuron(x), plain)  # W_rec = 0: the plain neuron


def test_recurrent_neuron_streams_and_learns():
    from flexsnn.models.neurons import RecurrentSpikingNeuron, neuron_config

    torch.manual_seed(1)
    neuron = RecurrentSpikingNeuron(neuron_config("paper-lif", decay=0.95), 5, learn_decay=True)
    torch.testing.assert_close(neuron.decay(), torch.full((5,), 0.95))
    x = torch.rand(10, 3, 5) * 2
    full = neuron(x)
    neuron.reset()
    parts = torch.cat([neuron(x[:4]), neuron(x[4:])])  # state (v and last spikes) carried over
    torch.testing.assert_close(parts, full)
    neuron.reset()
    # linear readout of the spikes, like seqfc, so the loss depends on W_rec and the decay
    loss = (neuron(x) * torch.arange(1.0, 6.0)).sum()
    loss.backward()
    assert float(neuron.recurrent.weight.grad.abs().sum()) > 0
    assert float(neuron.decay_logit.grad.abs().sum()) > 0


def test_recurrent_neuron_rejects_bad_input_and_strategies():
    from flexsnn.models.neurons import RecurrentSpikingNeuron, neuron_config

    neuron = RecurrentSpikingNeuron(neuron_config("paper-lif"), 4)
    with pytest.raises(ConfigError, match=r"\[T, B, 4\]"):
        neuron(torch.rand(3, 2, 5))
    with pytest.raises(ConfigError, match="neuron.features"):
        RecurrentSpikingNeuron(neuron_config("paper-lif"), 0)
    neuron.strategy = lambda n, x, v: (x, v)
    with pytest.raises(ConfigError, match="bptt"):
        neuron(torch.rand(3, 2, 4))


def test_seqfc_recurrent_same_size_as_rnn_and_round_trips(tmp_path):
    rnn_params = sum(p.numel() for p in RNNClassifier(hidden=64, num_layers=2).parameters())
    plain = build_model("seqfc", T=28)
    torch.manual_seed(0)
    model = build_model("seqfc", T=28, recurrent=True, learn_decay=True)
    assert sum(p.numel() for p in model.parameters()) == rnn_params == 14986
    rec_only = build_model("seqfc", recurrent=True)
    assert sum(p.numel() for p in rec_only.parameters()) == rnn_params - 2 * 64  # no per-neuron decay
    x = torch.rand(28, 3, 1, 1, 28) * 2
    assert model(x).shape == (28, 3, 10)
    model.set_temporal_config((28, 7))  # MTT: the second stage's recurrence runs at 7 steps
    assert model(x).shape == (7, 3, 10)
    model.set_uniform(28)
    plain.load_state_dict({k: v for k, v in model.state_dict().items()
                           if "recurrent" not in k and "decay_logit" not in k})
    assert not torch.equal(model(x), plain(x))
    with pytest.raises(ConfigError, match="model.recurrent"):
        build_model("seqfc", recurrent="yes")
    with pytest.raises(ConfigError, match="model.learn_decay"):
        build_model("seqfc", learn_decay=True)  # the learnable leak lives in the recurrent neuron
    path = tmp_path / "rec.safetensors"
    save_checkpoint(path, model, CheckpointMeta(model_name="seqfc", model_kwargs=model.zoo_kwargs,
                                                neuron_profile="paper-lif", stages=model.stage_names))
    loaded, _ = load_model(path)
    torch.testing.assert_close(loaded(x), model(x))
