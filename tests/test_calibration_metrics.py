"""ECE / AdaECE against hand-computed cases; per-step metrics use the cumulative mean."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from flexsnn.errors import ConfigError
from flexsnn.training.calibration_metrics import (
    CalibrationAccumulator,
    adaptive_ece,
    calibration_per_step,
    cumulative_confidences,
    expected_calibration_error,
    reliability_bins,
    save_reliability_diagram,
)

CONF = np.array([0.91, 0.92, 0.2, 0.5])
CORRECT = np.array([1, 0, 0, 1])


def test_ece_hand_computed():
    # 15 bins: 0.91 and 0.92 share bin 13 (acc .5, conf .915); 0.2 -> bin 2; 0.5 -> bin 7
    expected = 2 / 4 * abs(0.5 - 0.915) + 1 / 4 * 0.2 + 1 / 4 * 0.5
    assert expected_calibration_error(CONF, CORRECT) == pytest.approx(expected, abs=1e-12)
    count, acc, conf = reliability_bins(CONF, CORRECT)
    assert count.tolist() == [0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 2, 0]
    assert acc[13] == 0.5 and conf[13] == pytest.approx(0.915)


def test_ece_bin_edges_are_right_closed():
    # 1/15 lies on an edge: it belongs to bin 0 = (0, 1/15]; 0 goes to bin 0; 1 to bin 14
    count, _, _ = reliability_bins(np.array([1 / 15, 0.0, 1.0]), np.array([1, 1, 1]))
    assert count[0] == 2 and count[14] == 1


def test_adaece_hand_computed():
    # 2 equal-count bins over the sorted confidences: {0.2, 0.5} and {0.91, 0.92}
    expected = 0.5 * abs(0.5 - 0.35) + 0.5 * abs(0.5 - 0.915)
    assert adaptive_ece(CONF, CORRECT, n_bins=2) == pytest.approx(expected, abs=1e-12)
    # 15 bins over 4 samples: every sample alone
    alone = (0.2 + 0.5 + 0.09 + 0.92) / 4
    assert adaptive_ece(CONF, CORRECT) == pytest.approx(alone, abs=1e-12)


def test_perfectly_calibrated_is_zero_and_empty_is_zero():
    conf = np.array([0.5, 0.5, 1.0, 1.0])
    correct = np.array([1, 0, 1, 1])
    assert expected_calibration_error(conf, correct) == pytest.approx(0.0)
    assert adaptive_ece(conf, correct, n_bins=2) == pytest.approx(0.0)
    assert expected_calibration_error(np.array([]), np.array([])) == 0.0


def test_per_step_uses_cumulative_mean():
    # step 0 predicts class 1 (wrong), step 1 alone predicts 0 strongly: cumulative mean predicts 0
    logits = torch.tensor([[[0.0, 1.0]], [[3.0, 0.0]]])
    y = torch.tensor([0])
    conf, pred = cumulative_confidences(logits)
    assert pred.tolist() == [[1], [0]]
    p1 = 1 / (1 + math.exp(-1.0))  # mean logits [1.5, 0.5]
    assert conf[1, 0] == pytest.approx(p1)
    rep = calibration_per_step(logits, y)
    assert rep.accuracy_per_t == [0.0, 1.0]
    assert rep.ece_per_t[0] == pytest.approx(p1)  # conf of wrong class = sigmoid(1), acc 0
    assert rep.ece_per_t[1] == pytest.approx(1 - p1)
    assert rep.n_samples == 1


def test_accumulator_matches_single_batch_and_checks_t():
    torch.manual_seed(0)
    logits = torch.randn(3, 20, 4)
    y = torch.randint(0, 4, (20,))
    acc = CalibrationAccumulator()
    acc.update(logits[:, :7], y[:7])
    acc.update(logits[:, 7:], y[7:])
    assert acc.report() == calibration_per_step(logits, y)
    with pytest.raises(ConfigError, match="T_out"):
        acc.update(torch.randn(5, 2, 4), torch.tensor([0, 1]))


def test_reliability_diagram_png(tmp_path):
    torch.manual_seed(0)
    acc = CalibrationAccumulator()
    acc.update(torch.randn(4, 50, 10) * 3, torch.randint(0, 10, (50,)))
    conf, correct = acc.arrays()
    path = save_reliability_diagram(tmp_path / "rel.png", conf, correct, title="test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ConfigError, match="steps"):
        save_reliability_diagram(tmp_path / "x.png", conf, correct, steps=[9])


def test_evaluate_calibration_on_a_model(tmp_path):
    from torch import nn

    from flexsnn.models.neurons import make_neuron
    from flexsnn.models.tfsnn import TFSNN, Stage
    from flexsnn.training.calibration_metrics import evaluate_calibration

    torch.manual_seed(0)
    model = TFSNN([Stage("fc", [nn.Flatten(), nn.Linear(8, 3), make_neuron("paper-lif")]),
                   Stage("out", [nn.Linear(3, 3)])],
                  neuron_profile="paper-lif", num_classes=3, input_shape=(2, 2, 2), default_T=4)
    batches = [(torch.rand(5, 4, 2, 2, 2), torch.randint(0, 3, (5,))) for _ in range(3)]
    model.train()
    rep = evaluate_calibration(model, batches, config=(4, 2), reliability_png=tmp_path / "r.png")
    assert model.training and model.temporal_config == (4, 2)
    assert len(rep.accuracy_per_t) == 2 and rep.n_samples == 15
    # the last step's accuracy is the accuracy of the time-summed output
    model.eval()
    with torch.no_grad():
        correct = sum(int((model(x.transpose(0, 1)).sum(0).argmax(-1) == y).sum()) for x, y in batches)
    assert rep.accuracy_per_t[-1] == pytest.approx(correct / 15)
    assert (tmp_path / "r.png").exists()
