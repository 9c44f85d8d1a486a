"""A rate model with history, for the sim-to-real C2ST study (``benchmarks/c2st_history.py``).

The shipped learned renderer (:mod:`flexsnn.data.learned_dvs`) gives every recording of an image
the same expected counts ``[2, n_bins, 34, 34]``; what varies between recordings is drawn
afterwards (gain fields, time gain, renewal, bursts). Here the log rate of bin ``k`` also sees
what the recording itself did in the bins before it::

    rate[:, k] = exp(image_logit[:, k] + h2(relu(h1(history_k)))) + noise[:, k]

``history_k`` ``[13, 34, 34]`` holds, per polarity, ``log1p`` of the counts of bins ``k-1`` and
``k-2`` and of all bins before ``k``, the same three of the image part's expected counts (so the
net can tell "ahead of" from "behind" the mean), and ``k / n_bins``. ``h1`` is a ``kernel``-wide
convolution, so a pixel learns from its neighbours whether the edge has passed. The image part
starts from a fitted :class:`~flexsnn.data.learned_dvs.LearnedDVS`; ``h2`` starts at zero, so the
untrained model is that renderer's mean. Training is teacher-forced Poisson likelihood of the
real counts; generation runs the bins in order, each drawing its counts from the rates that the
counts drawn so far give (:func:`generate`).

Counts per bin are drawn from a mixture, with probability ``poisson_share`` Poisson and otherwise
the least-variance count of that mean (``floor(rate)`` plus one with probability
``frac(rate)``): real counts per bin vary less than Poisson's (:func:`fit_poisson_share` fits the
share by likelihood).
"""

from __future__ import annotations

import time

import numpy as np

from flexsnn.data.events import EVENT_DTYPE
from flexsnn.data.learned_dvs import SIZE, LearnedDVS

N_HISTORY = 13


def history_net(model: LearnedDVS, *, hidden: int = 16, kernel: int = 5):
    """A torch module whose image part (``.rate``, a :class:`~benchmarks.fit_learned_dvs.RateNet`)
    holds ``model``'s arrays (trainable), with its sensor patterns (fixed), and whose history part
    is zero (so it starts as ``model``'s mean rates)."""
    import torch
    from torch import nn

    from benchmarks.fit_learned_dvs import RateNet

    n_bins = model.n_bins
    rate = RateNet(model.arrays["conv1_weight"].shape[0], n_bins)
    rate.load_arrays(model.arrays)

    class _Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.n_bins = n_bins
            self.rate = rate
            self.h1 = nn.Conv2d(N_HISTORY, hidden, kernel, padding=kernel // 2)
            self.h2 = nn.Conv2d(hidden, 2, 3, padding=1)
            # the renderer's sensor patterns (zero for a model without them), fixed
            zero = np.zeros((2, n_bins, SIZE, SIZE), np.float32)
            for name in ("gain_pt", "noise_pt"):
                self.register_buffer(name, torch.from_numpy(model.patterns.get(name, zero)))
            nn.init.zeros_(self.h2.weight)
            nn.init.zeros_(self.h2.bias)

        def image_logit(self, images):  # [B, 1, 28, 28] -> [B, 2, n_bins, 34, 34]
            return self.rate.image_logit(images) + self.gain_pt

        def noise_rate(self):  # [2, n_bins, 34, 34]
            return self.rate.noise_rate() * torch.exp(self.noise_pt)

        def history(self, counts, expected, k: int):
            """``[B, 13, 34, 34]`` inputs of bin ``k`` from counts and expected counts
            ``[B, 2, n_bins, 34, 34]`` (only bins before ``k`` are read)."""
            zero = torch.zeros_like(counts[:, :, 0])

            def three(c):
                return [c[:, :, k - 1] if k >= 1 else zero, c[:, :, k - 2] if k >= 2 else zero,
                        c[:, :, :k].sum(2) if k else zero]

            stage = torch.full_like(zero[:, :1], k / n_bins)
            return torch.cat([torch.log1p(v) for v in three(counts) + three(expected)] + [stage], 1)

        def delta(self, feats):  # [B, 13, 34, 34] -> [B, 2, 34, 34] added log rate
            return self.h2(torch.relu(self.h1(feats)))

        def teacher_forced(self, images, counts):
            """Rates ``[B, 2, n_bins, 34, 34]`` of every bin given the real ``counts``."""
            o = self.image_logit(images)
            expected = torch.exp(o.clamp(max=6.0)).detach()
            feats = torch.stack([self.history(counts, expected, k) for k in range(n_bins)], 1)
            b = images.shape[0]
            d = self.delta(feats.reshape(b * n_bins, N_HISTORY, SIZE, SIZE))
            d = d.reshape(b, n_bins, 2, SIZE, SIZE).transpose(1, 2)
            return torch.exp((o + d).clamp(max=6.0)) + self.noise_rate()

    return _Net()


def poisson_nll(net, images, counts, batch: int = 50) -> float:
    """Mean Poisson negative log likelihood per cell (without ``log y!``), teacher-forced."""
    import torch

    total = 0.0
    with torch.no_grad():
        for i in range(0, len(images), batch):
            lam = net.teacher_forced(images[i:i + batch], counts[i:i + batch])
            total += float((lam - counts[i:i + batch] * torch.log(lam + 1e-8)).sum())
    return total / counts.numel()


def fit_history(net, images, counts, held_images, held_counts, *, epochs: int, seed: int,
                batch_size: int = 25, log=print) -> dict:
    """Teacher-forced Poisson fit (history part lr 3e-3, image part 3e-4: it starts fitted).

    ``images`` ``[N, 1, 28, 28]``, ``counts`` ``[N, 2, n_bins, 34, 34]`` (torch). Returns the
    fit and held-out NLL before and after, and the seconds taken."""
    import torch

    from benchmarks.fit_learned_dvs import train_epoch

    torch.manual_seed(seed)
    before = {"fit": poisson_nll(net, images, counts), "held_out": poisson_nll(net, held_images, held_counts)}
    hist = [p for n, p in net.named_parameters() if n.startswith("h")]
    rest = [p for n, p in net.named_parameters() if not n.startswith("h")]
    opt = torch.optim.Adam([{"params": hist, "lr": 3e-3}, {"params": rest, "lr": 3e-4}])
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()

    def loss_of(b):
        lam = net.teacher_forced(images[b], counts[b])
        return (lam - counts[b] * torch.log(lam + 1e-8)).mean()

    for epoch in range(epochs):
        train_epoch(loss_of, len(images), batch_size, opt, gen)
        if (epoch + 1) % 5 == 0 or epoch + 1 == epochs:
            log(f"  history: epoch {epoch + 1}/{epochs}  held-out nll "
                f"{poisson_nll(net, held_images, held_counts):.5f}  ({time.perf_counter() - t0:.0f} s)")
    after = {"fit": poisson_nll(net, images, counts), "held_out": poisson_nll(net, held_images, held_counts)}
    return {"nll_before": before, "nll_after": after, "epochs": epochs, "seconds": time.perf_counter() - t0}


def mixture_log_likelihood(counts: np.ndarray, rates: np.ndarray, poisson_share: float) -> float:
    """Mean log likelihood per cell of ``counts`` under the count mixture (module docstring)."""
    from scipy.stats import poisson

    lo = np.floor(rates)
    frac = rates - lo
    least = np.where(counts == lo, 1.0 - frac, 0.0) + np.where(counts == lo + 1, frac, 0.0)
    p = poisson_share * poisson.pmf(counts, rates) + (1.0 - poisson_share) * least
    return float(np.log(np.maximum(p, 1e-300)).mean())


def fit_poisson_share(counts: np.ndarray, rates: np.ndarray,
                      grid: np.ndarray = np.linspace(0.0, 1.0, 21)) -> tuple[float, dict[str, float]]:
    """The share (on ``grid``) of largest likelihood of ``counts`` given teacher-forced
    ``rates`` (same shape), and the log likelihood per share."""
    ll = {f"{g:.2f}": mixture_log_likelihood(counts, rates, float(g)) for g in grid}
    best = max(ll, key=ll.get)
    return float(best), ll


def draw_counts(rates: np.ndarray, poisson_share: float, rng: np.random.Generator) -> np.ndarray:
    """Counts of the mixture with means ``rates`` (any shape), as int64."""
    least = np.floor(rates) + (rng.random(rates.shape) < rates - np.floor(rates))
    pois = rng.poisson(rates)
    return np.where(rng.random(rates.shape) < poisson_share, pois, least).astype(np.int64)


def counts_to_events(counts: np.ndarray, duration_us: float, rng: np.random.Generator) -> np.ndarray:
    """One recording (:data:`EVENT_DTYPE`, sorted by t) of counts ``[2, n_bins, 34, 34]``, each
    event at a uniform time inside its bin of ``[0, duration_us]``."""
    n_bins = counts.shape[1]
    p, k, y, x = np.nonzero(counts)
    rep = np.repeat(np.arange(p.size), counts[p, k, y, x])
    t = np.floor((k[rep] + rng.random(rep.size)) / n_bins * duration_us).astype(np.int64)
    order = np.argsort(t, kind="stable")
    events = np.empty(rep.size, dtype=EVENT_DTYPE)
    events["x"], events["y"], events["p"] = x[rep][order], y[rep][order], p[rep][order]
    events["t"] = t[order]
    return events


def generate(net, images: np.ndarray, *, poisson_share: float, duration_mean_us: float,
             duration_std_us: float, seed: int, chunk: int = 100) -> list[np.ndarray]:
    """Recordings of ``[N, 28, 28]`` images, bin by bin (each bin's rates from the counts drawn
    before it). Same seed, same recordings."""
    import torch

    rng = np.random.default_rng(seed)
    out: list[np.ndarray] = []
    with torch.no_grad():
        for start in range(0, len(images), chunk):
            x = torch.from_numpy(np.asarray(images[start:start + chunk], np.float32)).unsqueeze(1)
            o = net.image_logit(x)
            expected = torch.exp(o.clamp(max=6.0))
            noise = net.noise_rate()
            counts = torch.zeros_like(expected)
            for k in range(net.n_bins):
                d = net.delta(net.history(counts, expected, k))
                lam = torch.exp((o[:, :, k] + d).clamp(max=6.0)) + noise[:, k]
                counts[:, :, k] = torch.from_numpy(
                    draw_counts(lam.double().numpy(), poisson_share, rng).astype(np.float32))
            for c in counts.numpy().astype(np.int64):
                duration = max(rng.normal(duration_mean_us, duration_std_us), 1.0)
                out.append(counts_to_events(c, duration, rng))
    return out
