"""A per-recording saccade-path latent for the learned renderer's rates (``c2st_path.py``).

N-MNIST's pan-tilt unit does not trace quite the same path in every recording. Here that is a
displacement ``D[k] = (dy, dx)`` in pixels per bin ``k`` of the recording's normalized time: the
rate CNN's log-rate map of bin ``k`` is moved by ``D[k]`` before the sensor's gain and patterns
(which stay in sensor coordinates) are applied::

    rate[p, k] = exp(shift(conv_out[p, k], D[k]) + gain[p]) * exp(gain_pt[p, k]) + noise[p, k]

The shift is bicubic on the log-rate map, so moving a map by a fraction of a pixel does not blur
it the way a bilinear shift would. ``D`` is fitted per recording by maximum a posteriori (Poisson
likelihood plus a Gaussian prior on ``D`` and on its change from bin to bin), and the CNN can be
refitted with each fit recording's ``D`` (:func:`fit_jointly`), so that its map is the one a
recording sees along its own path rather than the average over paths.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

SIZE = 34
#: Prior on the displacement (px): its sd, and the sd of its change from one bin to the next.
PRIOR_SD_PX = 0.3
PRIOR_STEP_PX = 0.1


def shift_maps(maps, displacement):
    """``maps`` ``[B, 2, n_bins, H, W]`` (torch), each bin's map moved by ``displacement``
    ``[B, n_bins, 2]`` (``dy, dx`` in px; positive moves content down / right); bicubic, edge
    values repeated outside."""
    return displace_maps(maps, displacement[..., None, None])


def displace_maps(maps, displacement):
    """``maps`` ``[B, 2, n_bins, H, W]`` (torch) moved pixel by pixel: ``displacement``
    ``[B, n_bins, 2, H, W]`` (or broadcastable to it: ``dy, dx`` in px, positive moves content
    down / right) says where each output pixel's content came from (``x - dx``); bicubic, edge
    values repeated outside."""
    import torch
    from torch.nn import functional as F

    b, c, nb, h, w = maps.shape
    ly = (torch.arange(h, dtype=maps.dtype) + 0.5) * 2 / h - 1
    lx = (torch.arange(w, dtype=maps.dtype) + 0.5) * 2 / w - 1
    gy, gx = torch.meshgrid(ly, lx, indexing="ij")
    sx = gx - displacement[:, :, 1] * 2 / w
    sy = gy - displacement[:, :, 0] * 2 / h
    grid = torch.stack(torch.broadcast_tensors(sx, sy), -1).expand(b, nb, h, w, 2).reshape(b * nb, h, w, 2)
    flat = maps.transpose(1, 2).reshape(b * nb, c, h, w)
    out = F.grid_sample(flat, grid, mode="bicubic", padding_mode="border", align_corners=False)
    return out.reshape(b, nb, c, h, w).transpose(1, 2)


def path_rates_net(model):
    """A torch module with the learned renderer ``model``'s arrays as parameters (the sensor
    patterns fixed): ``net(images [B, 28, 28], D [B, n_bins, 2]) -> rates [B, 2, n_bins, 34, 34]``;
    with ``D = 0`` it gives ``model.rates(images)``."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    from flexsnn.data.learned_dvs import IMAGE_PAD

    class PathRates(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            for name, value in model.arrays.items():
                self.register_parameter(name, nn.Parameter(torch.from_numpy(value.copy())))
            zeros = np.zeros((2, model.n_bins, SIZE, SIZE), np.float32)
            self.gain_pt = torch.from_numpy(model.patterns.get("gain_pt", zeros))
            self.noise_pt = torch.from_numpy(model.patterns.get("noise_pt", zeros))
            self.n_bins = model.n_bins

        def conv_out(self, images):  # [B, 28, 28] -> [B, 2, n_bins, 34, 34], before the gain
            x = F.pad(images.unsqueeze(1), (IMAGE_PAD,) * 4)
            h = torch.relu(F.conv2d(x, self.conv1_weight, self.conv1_bias,
                                    padding=self.conv1_weight.shape[-1] // 2))
            return F.conv2d(h, self.conv2_weight, self.conv2_bias).reshape(-1, 2, self.n_bins, SIZE, SIZE)

        def forward(self, images, displacement, conv_out=None):
            o = self.conv_out(images) if conv_out is None else conv_out
            return self.sensor(shift_maps(o, displacement) + self.gain)

        def sensor(self, logit):  # log signal [B, 2, n_bins, 34, 34] -> rates, the patterns and noise added
            signal = torch.exp(logit.clamp(max=6.0)) * torch.exp(self.gain_pt)
            return signal + torch.exp(self.noise + self.noise_t.reshape(1, -1, 1, 1) + self.noise_pt)

        def numpy_arrays(self) -> dict[str, np.ndarray]:
            return {name: p.detach().numpy().copy() for name, p in self.named_parameters()}

    return PathRates()


def nll_per_recording(rates, counts):
    """Poisson negative log likelihood (without ``log y!``) summed per recording: ``[B]``."""
    import torch

    return (rates - counts * torch.log(rates)).sum((1, 2, 3, 4))


def path_prior(displacement, sd_px: float = PRIOR_SD_PX, step_px: float = PRIOR_STEP_PX):
    """Negative log prior of ``displacement`` ``[B, n_bins, 2]`` per recording: ``[B]``."""
    step = displacement[:, 1:] - displacement[:, :-1]
    return ((displacement ** 2).sum((1, 2)) / (2 * sd_px ** 2)
            + (step ** 2).sum((1, 2)) / (2 * step_px ** 2))


def fit_displacements(net, images: np.ndarray, counts: np.ndarray, *, steps: int = 40,
                      lr: float = 0.05, chunk: int = 100,
                      start: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """MAP displacement ``[N, n_bins, 2]`` (px) of each recording (``counts`` ``[N, 2, n_bins, 34,
    34]`` of ``images`` ``[N, 28, 28]``) with ``net`` fixed (Adam, ``steps`` full-chunk steps), and
    the gain in log likelihood over ``D = 0`` per recording (nats, ``[N]``)."""
    import torch

    found, gains = [], []
    for i in range(0, len(images), chunk):
        x = torch.from_numpy(images[i:i + chunk].astype(np.float32))
        y = torch.from_numpy(counts[i:i + chunk].astype(np.float32))
        d = (torch.zeros(len(x), net.n_bins, 2) if start is None
             else torch.from_numpy(start[i:i + chunk].astype(np.float32)))
        d.requires_grad_(True)
        with torch.no_grad():
            o = net.conv_out(x)
            before = nll_per_recording(net(x, torch.zeros_like(d), o), y)
        opt = torch.optim.Adam([d], lr=lr)
        for _ in range(steps):
            opt.zero_grad()
            (nll_per_recording(net(x, d, o), y) + path_prior(d)).sum().backward()
            opt.step()
        with torch.no_grad():
            after = nll_per_recording(net(x, d, o), y)
        found.append(d.detach().numpy())
        gains.append((before - after).numpy())
    return np.concatenate(found), np.concatenate(gains)


def mean_nll(net, images: np.ndarray, counts: np.ndarray, displacement: np.ndarray) -> float:
    """Mean negative log likelihood per cell (pixel, polarity, bin) of ``counts`` given ``D``."""
    rates = rates_along(net, images, displacement)
    return float((rates - counts * np.log(rates)).mean())


def train_epoch(net, opt, x, y, displacement, gen, batch_size: int) -> float:
    """One epoch of ``opt`` on the mean Poisson NLL per cell of counts ``y`` ``[N, 2, n_bins, 34,
    34]`` given images ``x`` ``[N, 28, 28]`` and ``displacement`` ``[N, n_bins, 2]`` (None: no
    path), in batches shuffled by the torch generator ``gen``; returns the epoch's mean loss."""
    import torch

    order = torch.randperm(len(x), generator=gen)
    total = 0.0
    for i in range(0, len(x), batch_size):
        b = order[i:i + batch_size]
        opt.zero_grad()
        loss = nll_per_recording(net(x[b], None if displacement is None else displacement[b]), y[b]).mean() / y[0].numel()
        loss.backward()
        opt.step()
        total += loss.item() * len(b)
    return total / len(x)


def fit_jointly(net, images: np.ndarray, counts: np.ndarray, *, rounds: int, epochs: int,
                seed: int, batch_size: int = 25, path_steps: int = 40, path_lr: float = 0.05,
                log=print) -> np.ndarray:
    """Alternate :func:`fit_displacements` (``path_steps`` at ``path_lr``) and ``epochs`` of Adam
    on the CNN and sensor arrays given them (``rounds`` times), from ``net``'s current arrays;
    returns the last ``D``."""
    import torch

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    sensor = {"gain", "noise", "noise_t"}
    params = dict(net.named_parameters())
    opt = torch.optim.Adam([{"params": [p for k, p in params.items() if k not in sensor], "lr": 1e-3},
                            {"params": [p for k, p in params.items() if k in sensor], "lr": 3e-3}])
    x, y = torch.from_numpy(images.astype(np.float32)), torch.from_numpy(counts.astype(np.float32))
    d = np.zeros((len(images), net.n_bins, 2), np.float32)
    t0 = time.perf_counter()
    for r in range(rounds):
        d, gain = fit_displacements(net, images, counts, start=d, steps=path_steps, lr=path_lr)
        dt = torch.from_numpy(d)
        for _ in range(epochs):
            train_epoch(net, opt, x, y, dt, gen, batch_size)
        log(f"  joint fit: round {r + 1}/{rounds}, path gain {gain.mean():.1f} nats per recording "
            f"({time.perf_counter() - t0:.0f} s)")
    return d


@dataclass
class PathDistribution:
    """A Gaussian over whole paths (``[n_bins * 2]``), from fitted displacements."""

    mean: np.ndarray  # [n_bins * 2]
    eigval: np.ndarray  # [n_bins * 2]
    eigvec: np.ndarray  # [n_bins * 2, n_bins * 2]
    n_bins: int

    @classmethod
    def of(cls, displacement: np.ndarray) -> "PathDistribution":
        flat = displacement.reshape(len(displacement), -1).astype(np.float64)
        w, v = np.linalg.eigh(np.cov(flat.T))
        return cls(flat.mean(0), np.clip(w, 0.0, None), v, displacement.shape[1])

    def sample(self, n: int, rng: np.random.Generator, scale: float = 1.0) -> np.ndarray:
        """``[n, n_bins, 2]`` paths; ``scale`` multiplies the sd about the mean."""
        e = rng.standard_normal((n, self.eigval.size)) * np.sqrt(self.eigval) * scale
        return (self.mean + e @ self.eigvec.T).reshape(n, self.n_bins, 2)


def rates_along(net, images: np.ndarray, displacement: np.ndarray) -> np.ndarray:
    """``net``'s rates ``[N, 2, n_bins, 34, 34]`` (float64) of ``images`` along ``displacement``."""
    import torch

    out = []
    with torch.no_grad():
        for i in range(0, len(images), 100):
            out.append(net(torch.from_numpy(images[i:i + 100].astype(np.float32)),
                           torch.from_numpy(displacement[i:i + 100].astype(np.float32))).double().numpy())
    return np.concatenate(out)


def marginal_correction(real_counts: np.ndarray, marginal: np.ndarray, shrink: float = 20.0) -> np.ndarray:
    """``[2, n_bins, 34, 34]`` factor that brings the mean of ``marginal`` rates (``[N, 2, n_bins,
    34, 34]``, averaged over paths) to the real ``counts``' per polarity and bin, and then per
    polarity and pixel (whole recording; shrunk toward 1 by ``shrink`` events summed over the
    recordings where few events fall)."""
    profile = real_counts.sum((0, 3, 4)) / marginal.sum((0, 3, 4))
    image_real, image_model = real_counts.sum((0, 2)), (marginal * profile[None, :, :, None, None]).sum((0, 2))
    image = (image_real + shrink) / (image_model + shrink)
    return profile[:, :, None, None] * image[:, None]
