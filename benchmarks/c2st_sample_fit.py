"""Fitting the frame-count model on its samples, not its likelihood: does the C2ST fall? (issue 16)

Every likelihood fit so far (``c2st_frames.py``, ``c2st_history.py``, ``fit_learned_dvs.py``)
lowered the held-out cross-entropy without moving the C2ST: teacher-forced likelihood does not
see how counts are arranged across neighbouring pixels, frames and polarities in one sample, and
that arrangement is what gives generated recordings away. Here the per-cell count model of
``_frame_counts.py`` gets a noise map as a second input (cells are independent only given the
image *and* the noise, so the noise can correlate them), and is trained on what its samples look
like, in three arms, each starting from the same likelihood fit:

* **likelihood**: the starting point, fitted by cross-entropy alone (the noise drawn, but
  nothing rewards using it);
* **energy score**: a proper scoring rule on the pairs. For each image, two samples ``g, g'`` and
  the real recording ``r``, mapped by :func:`count_features` (per-frame count histograms,
  neighbour / consecutive-frame / ON-OFF products, and pooled features of a fixed random CNN on
  the classifier's own inputs), standardized on the real fit half; the loss is
  ``E|f(g) - f(r)| - |f(g) - f(g')| / 2`` (Gneiting & Raftery 2007), lowest when the model's
  samples are distributed as the recordings are, plus the cross-entropy as an anchor;
* **adversarial**: a discriminator with the C2ST's architecture (``_s2r_c2st._net``) on the
  T = 10, 5 and 1 count frames, against the generator (non-saturating GAN loss plus the
  cross-entropy as an anchor).

Samples are drawn by straight-through Gumbel-softmax (hard one-hot counts forward, the softmax's
gradient backward). Every arm's counts become events as in ``c2st_frames.py``
(``frame_counts_to_events``) and meet the same C2ST. All fits use the fit half of the pairs;
the C2ST tests on the held-out half.

    python benchmarks/c2st_sample_fit.py            # ~25 min on 2 cores
    python benchmarks/c2st_sample_fit.py --smoke    # seconds; writes c2st_sample_fit_smoke.json
"""

from __future__ import annotations

import time

import numpy as np

#: The generator: three 3x3 layers of 32 channels, eight noise channels.
HIDDEN, DEPTH, NOISE = 32, 3, 8


def count_features(onehot, random_convs):
    """``[B, D]`` features of one-hot counts ``[B, 2, T, K, 34, 34]``: log1p of each frame's
    number of pixels per count class (1 .. K-1), of the sums of neighbour products along x and
    y, between consecutive frames and between polarities, and of squared counts; then mean and
    max pooled ReLU features of ``random_convs`` (two fixed convolutions) on the classifier's
    inputs (log1p counts at T = 10, 5 and 1). Differentiable in ``onehot``."""
    import torch
    from torch.nn import functional as F

    c = _counts(onehot)  # [B, 2, T, 34, 34]
    sums = [onehot[:, :, :, 1:].sum((-1, -2)).flatten(1),
            (c[..., 1:] * c[..., :-1]).sum((-1, -2)).flatten(1),
            (c[..., 1:, :] * c[..., :-1, :]).sum((-1, -2)).flatten(1),
            (c[:, :, 1:] * c[:, :, :-1]).sum((-1, -2)).flatten(1),
            (c[:, 0] * c[:, 1]).sum((-1, -2)),
            (c * c).sum((-1, -2)).flatten(1)]
    h1 = F.relu(random_convs[0](classifier_input(c)))
    h2 = F.relu(random_convs[1](h1))
    pooled = [h1.mean((-1, -2)), h2.mean((-1, -2)), h2.amax((-1, -2))]
    return torch.cat([torch.log1p(torch.cat(sums, 1))] + pooled, 1)


def classifier_input(counts):
    """``[B, 32, 34, 34]`` log1p counts at T = 10, 5 and 1 (frame-major, polarity first) of
    ``[B, 2, 10, 34, 34]`` counts."""
    import torch

    b, _, t, h, w = counts.shape
    t5 = counts.reshape(b, 2, t // 2, 2, h, w).sum(3)
    return torch.log1p(torch.cat([counts.flatten(1, 2), t5.flatten(1, 2), counts.sum(2)], 1))


def energy_score(f1, f2, f_real):
    """Mean over the batch of ``(|f1 - r| + |f2 - r| - |f1 - f2|) / 2`` for two samples' and the
    real recording's features ``[B, D]`` (Euclidean norms)."""
    return (((f1 - f_real).norm(dim=1) + (f2 - f_real).norm(dim=1) - (f1 - f2).norm(dim=1)) / 2).mean()


def _counts(onehot):
    """``[B, 2, T, 34, 34]`` counts of one-hot ``[B, 2, T, K, 34, 34]`` (differentiable)."""
    import torch

    k = torch.arange(onehot.shape[3], dtype=torch.float32).reshape(1, 1, 1, -1, 1, 1)
    return (onehot * k).sum(3)


def _onehot(counts):
    """``[B, 2, T, K, 34, 34]`` one-hot of integer-valued ``[B, 2, T, 34, 34]`` counts."""
    from torch.nn import functional as F

    from benchmarks._frame_counts import K

    return F.one_hot(counts.long(), K).permute(0, 1, 2, 5, 3, 4).float()


class SampleFit:
    """The generator, its data and the three objectives (``log_rates``/``counts`` ``[N, 2, T,
    34, 34]`` torch tensors of the fit half; counts clamped to the model's classes)."""

    def __init__(self, log_rates, counts, *, seed: int, hidden: int = HIDDEN, log=print) -> None:
        import torch

        from benchmarks import _frame_counts as fc

        torch.manual_seed(seed)
        self.net = fc.frame_count_net(hidden, noise_channels=NOISE, depth=DEPTH)
        self.x, self.y = log_rates, counts.clamp(max=fc.K - 1)
        self.gen = torch.Generator().manual_seed(seed)
        self.log = log

    def noise(self, n: int):
        import torch

        return torch.randn(n, NOISE, 34, 34, generator=self.gen)

    def sample(self, log_rates, tau: float = 1.0):
        """Hard one-hot samples ``[B, 2, T, K, 34, 34]`` with straight-through gradients."""
        from torch.nn import functional as F

        return F.gumbel_softmax(self.net.logits(log_rates, self.noise(len(log_rates))), tau=tau,
                                hard=True, dim=3)

    def _ce(self, b):
        return self.net.cross_entropy(self.x[b], self.y[b], self.noise(len(b)))

    def likelihood(self, epochs: int, batch_size: int = 25) -> None:
        import torch

        from benchmarks.fit_learned_dvs import train_epoch

        opt = torch.optim.Adam(self.net.parameters(), lr=2e-3)
        for _ in range(epochs):
            train_epoch(self._ce, len(self.x), batch_size, opt, self.gen)

    def energy(self, epochs: int, *, ce_weight: float = 30.0, lr: float = 5e-4,
               batch_size: int = 16) -> list[float]:
        """Energy-score epochs; returns the mean score per epoch."""
        import torch
        from torch import nn

        torch.manual_seed(1234)  # the fixed random features, the same in every run
        convs = (nn.Conv2d(32, 64, 3, padding=1), nn.Conv2d(64, 64, 3, stride=2, padding=1))
        for p in [*convs[0].parameters(), *convs[1].parameters()]:
            p.requires_grad_(False)
        with torch.no_grad():
            real = torch.cat([count_features(_onehot(self.y[i:i + 50]), convs) for i in range(0, len(self.y), 50)])
        mu, sd = real.mean(0), real.std(0).clamp_min(1e-3)

        def feats(onehot):
            return (count_features(onehot, convs) - mu) / sd

        scores: list[float] = []

        def loss(b):
            s = energy_score(feats(self.sample(self.x[b])), feats(self.sample(self.x[b])), feats(_onehot(self.y[b])))
            scores.append(float(s.detach()))
            return s + ce_weight * self._ce(b)

        return self._epochs(loss, epochs, lr, batch_size, scores)

    def adversarial(self, epochs: int, *, ce_weight: float = 0.3, lr: float = 2e-4,
                    d_lr: float = 3e-4, batch_size: int = 32) -> list[float]:
        """GAN epochs against a fresh discriminator; returns its mean accuracy per epoch
        (train mode, real and generated batches alike)."""
        import torch
        from torch.nn import functional as F

        from benchmarks._s2r_c2st import _net

        disc = _net(32)
        d_opt = torch.optim.Adam(disc.parameters(), lr=d_lr, betas=(0.5, 0.99))
        accuracy: list[float] = []

        def d_logit(onehot):  # the C2ST's two-logit head as one real-vs-generated logit
            out = disc(classifier_input(_counts(onehot)))
            return out[:, 1] - out[:, 0]

        def loss(b):
            real, fake = d_logit(_onehot(self.y[b])), d_logit(self.sample(self.x[b]).detach())
            d_opt.zero_grad()
            (F.softplus(-real).mean() + F.softplus(fake).mean()).backward()
            d_opt.step()
            accuracy.append(float(((real > 0).float().mean() + (fake < 0).float().mean()) / 2))
            return F.softplus(-d_logit(self.sample(self.x[b]))).mean() + ce_weight * self._ce(b)

        return self._epochs(loss, epochs, lr, batch_size, accuracy, betas=(0.5, 0.99))

    def _epochs(self, loss, epochs: int, lr: float, batch_size: int, trace: list[float], **adam) -> list[float]:
        import torch

        from benchmarks.fit_learned_dvs import train_epoch

        opt = torch.optim.Adam(self.net.parameters(), lr=lr, **adam)
        per_epoch: list[float] = []
        t0 = time.perf_counter()
        for epoch in range(epochs):
            start = len(trace)
            train_epoch(loss, len(self.x), batch_size, opt, self.gen)
            per_epoch.append(float(np.mean(trace[start:])))
            if (epoch + 1) % 5 == 0 or epoch + 1 == epochs:
                self.log(f"  epoch {epoch + 1}/{epochs}: {per_epoch[-1]:.3f} ({time.perf_counter() - t0:.0f} s)")
        return per_epoch

    def held_out_ce(self, log_rates, counts) -> float:
        """Cross-entropy per cell with the noise at zero (``[N, 2, T, 34, 34]`` tensors)."""
        from benchmarks._frame_counts import batched_cross_entropy

        return batched_cross_entropy(self.net, log_rates, counts)

    def draw(self, log_rates, seed: int) -> np.ndarray:
        """``[N, 2, T, 34, 34]`` int64 counts, one sample per image (seeded)."""
        import torch

        self.gen.manual_seed(seed)
        torch.manual_seed(seed)  # Gumbel noise comes from the global generator
        with torch.no_grad():
            parts = [_counts(self.sample(log_rates[i:i + 100])) for i in range(0, len(log_rates), 100)]
        return torch.cat(parts).numpy().astype(np.int64)


def main(argv: list[str] | None = None) -> dict:
    import copy

    import torch

    from flexsnn.io_utils import provenance

    from benchmarks import _frame_counts as fc
    from benchmarks._c2st_study import load_study, study_parser, study_record, write_result
    from benchmarks.fit_learned_dvs import normalized_counts

    t_start = time.perf_counter()
    ap = study_parser(__doc__, "likelihood epochs before the sample objectives")
    ap.set_defaults(epochs=40)
    ap.add_argument("--energy-epochs", type=int, default=30)
    ap.add_argument("--adversarial-epochs", type=int, default=80)
    study = load_study(ap, argv)
    args, rates, real = study.args, study.rates, study.real
    if args.smoke:
        args.energy_epochs = args.adversarial_epochs = 1
    log_rates = torch.from_numpy(fc.frame_log_rates(rates))
    counts = torch.from_numpy(np.stack([normalized_counts(r, fc.T) for r in real]).astype(np.float32))
    fit, held = torch.from_numpy(study.fit), torch.from_numpy(study.held)
    s = study.model.sampler
    durations = np.maximum(study.rng.normal(s.duration_mean_us, s.duration_std_us, len(real)), 1).astype(np.int64)

    def arm(model: SampleFit, trace: list[float] | None, seconds: float) -> dict:
        drawn = model.draw(log_rates, seed=args.seed + 1)
        rng = np.random.default_rng(args.seed)
        gen = fc.counts_to_recordings(drawn, rates, durations, rng)
        acc = study.c2st(gen)
        return {"c2st_per_seed": acc, "c2st": float(np.mean(acc)), "fit_seconds": seconds,
                "held_out_ce": model.held_out_ce(log_rates[held], counts[held].clamp(max=fc.K - 1)),
                "trace_per_epoch": trace}

    t0 = time.perf_counter()
    base = SampleFit(log_rates[fit], counts[fit], seed=args.seed)
    base.likelihood(args.epochs)
    result: dict = {"arms": {"likelihood": arm(base, None, time.perf_counter() - t0)}}
    print(f"likelihood: C2ST {result['arms']['likelihood']['c2st']:.3f}")
    for name, run, epochs in (("energy score", SampleFit.energy, args.energy_epochs),
                              ("adversarial", SampleFit.adversarial, args.adversarial_epochs)):
        print(f"{name}: {epochs} epochs")
        model = copy.deepcopy(base)
        t0 = time.perf_counter()
        trace = run(model, epochs)
        result["arms"][name] = arm(model, trace, time.perf_counter() - t0)
        print(f"{name}: C2ST {result['arms'][name]['c2st']:.3f}")

    result |= {"generator": {"hidden": HIDDEN, "depth": DEPTH, "noise_channels": NOISE},
               "epochs": {"likelihood": args.epochs, "energy score": args.energy_epochs,
                          "adversarial": args.adversarial_epochs},
               **study_record(study), "seconds": time.perf_counter() - t_start, **provenance()}
    print(f"\n{'arm':15s}{'held-out CE':>13s}{'C2ST':>8s}")
    for name, a in result["arms"].items():
        print(f"{name:15s}{a['held_out_ce']:13.4f}{a['c2st']:8.3f}")
    write_result(study, "c2st_sample_fit", result)
    return result


if __name__ == "__main__":
    main()
