"""A count model at the scale the classifier sees: one categorical per pixel, polarity and T = 10 frame.

The learned renderer draws events from expected rates with a regular renewal sampler, bursts
and per-recording gains; its per-frame count histogram is what a logistic C2ST finds first
(``benchmarks/c2st_frames.py``). This model replaces that sampler by a fitted distribution
per cell: ``P(k | image)`` for ``k = 0 .. K-1`` (the last class is ``>= K-1``), with logits

    log Poisson(k; lambda) + correction(k),

``lambda`` the shipped model's expected count in the cell (its 30 bins summed in threes) and the
correction a small CNN of all 20 frames' ``log lambda`` (zero at the start, so the untrained
model is Poisson in the shipped rates, cut at ``K - 1`` and renormalized). Cells are independent given the image. Events are
placed inside their frame by the shipped model's profile (``c2st_history.resample_times``).
"""

from __future__ import annotations

import time

import numpy as np

#: Count classes per cell; class K - 1 stands for ``>= K - 1`` (real frames: 0.01 % of the
#: pixel-frames hold 8 or more events).
K = 8
T = 10
SIZE = 34
#: log lambda below this carries no information (background) and would dominate the inputs' scale.
LOG_FLOOR = -8.0


def frame_log_rates(rates: np.ndarray) -> np.ndarray:
    """``[N, 2, T, 34, 34]`` float32 log expected events per T = 10 frame of the shipped
    ``[N, 2, n_bins, 34, 34]`` rates (``n_bins`` a multiple of 10)."""
    n, _, n_bins = rates.shape[:3]
    if n_bins % T:
        raise ValueError(f"rates have {n_bins} bins; frame_log_rates needs a multiple of {T}")
    return np.log(rates.reshape(n, 2, T, n_bins // T, SIZE, SIZE).sum(3)).astype(np.float32)


def frame_count_net(hidden: int = 32, *, noise_channels: int = 0, depth: int = 2):
    """The correction CNN with :meth:`logits` ``[B, 2, T, K, 34, 34]`` of log rates ``[B, 2, T, 34, 34]``.

    ``depth`` 3x3 convolutions of ``hidden`` channels, then a 1x1 one to the ``2 * T * K``
    corrections (zero at the start). With ``noise_channels`` > 0 the first convolution also sees
    a noise map ``[B, noise_channels, 34, 34]`` (zeros when none is given): cells are then
    independent given the image *and* the noise, so a fit that uses the noise can correlate
    neighbouring pixels, frames and polarities (``benchmarks/c2st_sample_fit.py``)."""
    import torch
    from torch import nn

    class _Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.noise_channels = noise_channels
            layers: list[nn.Module] = []
            width = 2 * T + noise_channels
            for _ in range(depth):
                layers += [nn.Conv2d(width, hidden, 3, padding=1), nn.ReLU()]
                width = hidden
            self.body = nn.Sequential(*layers, nn.Conv2d(hidden, 2 * T * K, 1))
            nn.init.zeros_(self.body[-1].weight)
            nn.init.zeros_(self.body[-1].bias)

        def logits(self, log_rates, noise=None):
            k = torch.arange(K, dtype=torch.float32).reshape(1, 1, 1, K, 1, 1)
            lam = log_rates.unsqueeze(3)
            poisson = k * lam - torch.exp(lam) - torch.lgamma(k + 1)
            x = log_rates.clamp(min=LOG_FLOOR).flatten(1, 2)
            if self.noise_channels:
                if noise is None:
                    noise = torch.zeros(len(x), self.noise_channels, SIZE, SIZE)
                x = torch.cat([x, noise], 1)
            return poisson + self.body(x).reshape(-1, 2, T, K, SIZE, SIZE)

        def cross_entropy(self, log_rates, counts, noise=None):
            """Mean negative log likelihood per cell of ``counts`` ``[B, 2, T, 34, 34]``."""
            lg = self.logits(log_rates, noise).permute(0, 3, 1, 2, 4, 5)  # classes on dim 1
            return nn.functional.cross_entropy(lg, counts.clamp(max=K - 1).long())

    return _Net()


def poisson_cross_entropy(log_rates: np.ndarray, counts: np.ndarray) -> float:
    """Mean Poisson negative log likelihood per cell (with the ``log k!`` term), the baseline
    that :func:`frame_count_net` starts from (counts clamped as its classes are)."""
    from scipy.special import gammaln

    k = np.minimum(counts, K - 1).astype(np.float64)
    lam = np.exp(log_rates.astype(np.float64))
    return float(np.mean(lam - k * np.log(lam) + gammaln(k + 1)))


def fit_frame_counts(net, log_rates: np.ndarray, counts: np.ndarray, held_log_rates: np.ndarray,
                     held_counts: np.ndarray, *, epochs: int, seed: int, batch_size: int = 25,
                     log=print) -> dict:
    """Fit by likelihood (Adam, one-cycle) on ``[N, 2, T, 34, 34]`` log rates and counts;
    return the held-out cross-entropy per cell before and after, and the seconds."""
    import torch

    from benchmarks.fit_learned_dvs import train_epoch

    torch.manual_seed(seed)
    x, y = torch.from_numpy(log_rates), torch.from_numpy(counts.astype(np.float32))
    xh, yh = torch.from_numpy(held_log_rates), torch.from_numpy(held_counts.astype(np.float32))

    def held_out() -> float:
        return batched_cross_entropy(net, xh, yh)

    before = held_out()
    steps = (len(x) + batch_size - 1) // batch_size
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=max(epochs * steps, 1))
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    after = before
    for epoch in range(epochs):
        train_epoch(lambda b: net.cross_entropy(x[b], y[b]), len(x), batch_size, opt, gen, sched)
        if (epoch + 1) % 20 == 0 or epoch + 1 == epochs:
            after = held_out()
            log(f"  frame counts: epoch {epoch + 1}/{epochs}  held-out CE {after:.5f}  "
                f"({time.perf_counter() - t0:.0f} s)")
    return {"held_out_ce_before": before, "held_out_ce_after": after,
            "seconds": time.perf_counter() - t0, "epochs": epochs}


def batched_cross_entropy(net, log_rates, counts, batch: int = 50) -> float:
    """``net``'s mean cross-entropy per cell over ``[N, 2, T, 34, 34]`` torch tensors, ``batch``
    recordings at a time, without gradients (the noise input, if any, at zero)."""
    import torch

    with torch.no_grad():
        parts = [float(net.cross_entropy(log_rates[i:i + batch], counts[i:i + batch])) * len(log_rates[i:i + batch])
                 for i in range(0, len(log_rates), batch)]
    return sum(parts) / len(log_rates)


def sample_frame_counts(net, log_rates: np.ndarray, seed: int, batch: int = 100) -> np.ndarray:
    """``[N, 2, T, 34, 34]`` int64 counts drawn cell by cell (seeded)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    out = []
    with torch.no_grad():
        for i in range(0, len(log_rates), batch):
            lg = net.logits(torch.from_numpy(log_rates[i:i + batch]))
            p = torch.softmax(lg, 3).permute(0, 1, 2, 4, 5, 3).reshape(-1, K)
            out.append(torch.multinomial(p, 1, generator=gen).reshape(lg.shape[0], 2, T, SIZE, SIZE))
    return torch.cat(out).numpy().astype(np.int64)


def frame_counts_to_events(counts: np.ndarray, rates: np.ndarray, duration_us: int,
                           rng: np.random.Generator) -> np.ndarray:
    """One recording (``EVENT_DTYPE``, sorted by t in µs) with ``counts`` ``[2, T, 34, 34]``
    events per frame of ``duration_us``; times inside each frame from the pixel's profile in
    ``rates`` ``[2, n_bins, 34, 34]``; the last event ends the recording, as in the files."""
    from flexsnn.data.events import EVENT_DTYPE

    from benchmarks.c2st_history import resample_times

    p, f, y, x = np.nonzero(counts)
    k = counts[p, f, y, x]
    p, f, y, x = (np.repeat(a, k) for a in (p, f, y, x))
    t = ((f + 0.5) / T * duration_us).astype(np.int64)  # frame centres: the segment is all that counts
    order = np.argsort(t, kind="stable")
    ev = np.empty(order.size, EVENT_DTYPE)
    ev["x"], ev["y"], ev["p"], ev["t"] = x[order], y[order], p[order], t[order]
    if ev.size:
        ev["t"][-1] = duration_us
        ev = resample_times(ev, rates, np.arange(1, T) / T, rng)
    return ev


def counts_to_recordings(counts: np.ndarray, rates: np.ndarray, durations, rng: np.random.Generator) -> list[np.ndarray]:
    """:func:`frame_counts_to_events` of each recording: ``counts`` ``[N, 2, T, 34, 34]``, ``rates``
    ``[N, 2, n_bins, 34, 34]``, ``durations`` ``[N]`` in µs; drawn in order from ``rng``."""
    return [frame_counts_to_events(counts[i], rates[i], int(durations[i]), rng) for i in range(len(counts))]
