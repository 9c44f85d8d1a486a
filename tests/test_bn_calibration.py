"""BN calibration (cumulative average at T_max) and bias removal (BN folded into weights)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from flexsnn.errors import ConfigError
from flexsnn.training.bn_calibration import (
    calibrate_bn, fold_batch_norm, freeze_biases, has_batch_norm, remove_biases,
)


class TimeNet(nn.Module):
    """Conv -> BN applied to [T, B, C, H, W] with time folded into the batch; records T."""

    def __init__(self, bn: bool = True) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, bias=True),
                                  *( [nn.BatchNorm2d(3)] if bn else [] ), nn.ReLU(),
                                  nn.Flatten(), nn.Linear(3 * 4 * 4, 5, bias=True),
                                  *( [nn.BatchNorm1d(5)] if bn else [] ))
        self.temporal_config = (4,)
        self.seen_T: list[int] = []
        self.resets = 0

    def set_uniform(self, T: int) -> None:
        self.temporal_config = (T,)

    def set_temporal_config(self, cfg) -> None:
        self.temporal_config = tuple(cfg)

    def reset(self) -> None:
        self.resets += 1

    def forward(self, x):
        T, B = x.shape[:2]
        x = x[: self.temporal_config[0]]
        self.seen_T.append(x.shape[0])
        return self.body(x.flatten(0, 1)).reshape(x.shape[0], B, -1)


def _batches(n, T=6, B=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(B, T, 2, 4, 4, generator=g) * 2 + 1, torch.zeros(B, dtype=torch.long)) for _ in range(n)]


def test_calibration_is_cumulative_average_at_config():
    torch.manual_seed(0)
    net = TimeNet()
    batches = _batches(12)
    # perturb the stats so that a no-op would be caught
    net.body[1].running_mean.fill_(7.0)
    net.train()
    used = calibrate_bn(net, batches, config=6, n_batches=10)
    assert used == 10
    assert net.temporal_config == (4,)                  # previous config restored
    assert net.seen_T == [6] * 10                       # calibrated at T_max
    assert net.training and net.body[1].momentum == 0.1  # flags and momentum restored
    # hand-computed: mean over batches of per-batch channel mean / unbiased variance
    means, vars_ = [], []
    with torch.no_grad():
        for x, _ in batches[:10]:
            z = net.body[0](x.transpose(0, 1).flatten(0, 1))     # [T*B, 3, 4, 4]
            means.append(z.mean(dim=(0, 2, 3)))
            vars_.append(z.transpose(0, 1).reshape(3, -1).var(dim=1, unbiased=True))
    torch.testing.assert_close(net.body[1].running_mean, torch.stack(means).mean(0), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(net.body[1].running_var, torch.stack(vars_).mean(0), rtol=1e-5, atol=1e-5)
    assert int(net.body[1].num_batches_tracked) == 10
    assert all(p.grad is None for p in net.parameters())


def test_calibration_without_bn_is_noop():
    net = TimeNet(bn=False)
    assert not has_batch_norm(net)
    assert calibrate_bn(net, _batches(2)) == 0


def test_fold_matches_bias_free_bn_model_in_eval():
    torch.manual_seed(1)
    net = TimeNet()
    for m in (net.body[1], net.body[5]):
        m.running_var.uniform_(0.5, 2.0)
        m.running_mean.uniform_(-1, 1)
        m.weight.data.uniform_(0.5, 1.5)
        m.bias.data.uniform_(-1, 1)
    x = _batches(1)[0][0].transpose(0, 1)
    folded = fold_batch_norm(net)
    assert net.body[1].running_mean.abs().sum() > 0        # input untouched
    # reference: the original with biases and means zeroed, eval mode
    ref = TimeNet()
    ref.load_state_dict(net.state_dict())
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if name.endswith("bias"):
                p.zero_()
        for m in (ref.body[1], ref.body[5]):
            m.running_mean.zero_()
    ref.eval(), folded.eval()
    torch.testing.assert_close(folded(x), ref(x), rtol=1e-5, atol=1e-5)
    plain = remove_biases(net, rebuild=lambda: TimeNet(bn=False))
    assert not has_batch_norm(plain)
    plain.eval()
    torch.testing.assert_close(plain(x), ref(x), rtol=1e-5, atol=1e-5)
    assert all(float(p.detach().abs().sum()) == 0 for n, p in plain.named_parameters() if n.endswith("bias"))
    ident = remove_biases(net)
    assert not has_batch_norm(ident)
    ident.eval()
    torch.testing.assert_close(ident(x), ref(x), rtol=1e-5, atol=1e-5)
    assert sorted(freeze_biases(plain)) == ["body.0.bias", "body.3.bias"]


def test_remove_biases_rejects_mismatched_rebuild_and_bad_bn():
    net = TimeNet()
    with pytest.raises(ConfigError):
        remove_biases(net, rebuild=lambda: nn.Sequential(nn.Conv2d(2, 3, 3)))
    with pytest.raises(ConfigError):
        remove_biases(net, rebuild=lambda: TimeNet(bn=True))
    bad = nn.Sequential(nn.ReLU(), nn.BatchNorm2d(2))
    with pytest.raises(ConfigError):
        fold_batch_norm(bad)
