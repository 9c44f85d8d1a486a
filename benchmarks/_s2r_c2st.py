"""Classifier two-sample test (C2ST) of generated vs real recordings of the same images.

A small CNN sees what the SNN sees, binned count frames (T = 3, 5 and 10 stacked as channels,
both polarities, ``log1p`` counts: ``[36, 34, 34]``), and learns to tell real (label 1) from
generated (label 0) recordings. It trains on the pairs of the fit half and is tested on the
pairs of the held-out half, so no image is on both sides. Held-out accuracy 0.5 means the two
sets are indistinguishable to it; 1.0 means every recording gives itself away.

:func:`c2st_views` asks the same question of one statistic at a time (a small MLP on a feature
vector, or the CNN on a reduced image), to show which differences give the recordings away.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

C2ST_T = (3, 5, 10)


def c2st_features(recs: list[np.ndarray]) -> np.ndarray:
    """``[N, 2 * sum(C2ST_T), 34, 34]`` float32 log1p counts."""
    from benchmarks._s2r_stats import frames

    parts = [frames(recs, T).reshape(len(recs), -1, 34, 34) for T in C2ST_T]
    return np.log1p(np.concatenate(parts, axis=1)).astype(np.float32)


def _net(channels: int):
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(channels, 32, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(32, 32, 3, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Dropout(0.3), nn.Linear(32 * 9 * 9, 2))


def _train(feature: Callable[[list[np.ndarray]], np.ndarray], real_train: list[np.ndarray],
           gen_train: list[np.ndarray], real_test: list[np.ndarray], gen_test: list[np.ndarray], *,
           seed: int, epochs: int, batch_size: int):
    """Train real (1) vs generated (0) on ``feature`` of the train sets; return the net in eval
    mode and the test inputs and labels. ``[N, C, 34, 34]`` features go to the CNN, ``[N, D]``
    ones to a 64-unit MLP."""
    import torch
    from torch import nn

    def x(recs):
        return torch.from_numpy(np.asarray(feature(recs), dtype=np.float32))

    xtr, xte = torch.cat([x(real_train), x(gen_train)]), torch.cat([x(real_test), x(gen_test)])
    if xtr.ndim == 2:  # feature vectors in their own units: standardize on the train set
        mu, sd = xtr.mean(0), xtr.std(0).clamp_min(1e-6)
        xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
    ytr = torch.cat([torch.ones(len(real_train)), torch.zeros(len(gen_train))]).long()
    yte = torch.cat([torch.ones(len(real_test)), torch.zeros(len(gen_test))]).long()
    torch.manual_seed(seed)
    net = _net(xtr.shape[1]) if xtr.ndim == 4 else nn.Sequential(
        nn.Linear(xtr.shape[1], 64), nn.ReLU(), nn.Linear(64, 2))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-4)
    loss_fn = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        net.train()
        order = torch.randperm(len(ytr), generator=g)
        for i in range(0, len(order), batch_size):
            b = order[i:i + batch_size]
            opt.zero_grad()
            loss_fn(net(xtr[b]), ytr[b]).backward()
            opt.step()
    net.eval()
    return net, xte, yte


def _held_out_accuracy(feature: Callable[[list[np.ndarray]], np.ndarray],
                       real_train: list[np.ndarray], gen_train: list[np.ndarray],
                       real_test: list[np.ndarray], gen_test: list[np.ndarray], *, seed: int,
                       epochs: int, batch_size: int) -> float:
    """Held-out accuracy of the classifier :func:`_train` fits on ``feature``."""
    net, xte, yte = _train(feature, real_train, gen_train, real_test, gen_test, seed=seed,
                           epochs=epochs, batch_size=batch_size)
    return accuracy(net, xte, yte)


def accuracy(net, x, y) -> float:
    """Share of ``x`` that ``net`` (in eval mode) labels as ``y`` (1 real, 0 generated)."""
    import torch

    with torch.no_grad():
        return float((net(x).argmax(1) == y).float().mean())


def c2st_saliency(real_train: list[np.ndarray], gen_train: list[np.ndarray],
                  real_test: list[np.ndarray], gen_test: list[np.ndarray], *, seed: int = 0,
                  epochs: int = 20, batch_size: int = 64) -> dict[str, np.ndarray]:
    """Where the C2ST's CNN looks: the mean over the test recordings of ``|x * d(logit_real -
    logit_generated)/dx|`` (gradient x input) of :func:`c2st_features`, summed into
    ``per_channel`` ``[2 * sum(C2ST_T)]`` (for each T of :data:`C2ST_T`: frame-major, then
    polarity) and ``per_pixel`` ``[34, 34]``; each normalized to sum 1."""
    net, xte, _ = _train(c2st_features, real_train, gen_train, real_test, gen_test, seed=seed,
                         epochs=epochs, batch_size=batch_size)
    xte = xte.clone().requires_grad_(True)
    out = net(xte)
    (out[:, 1] - out[:, 0]).sum().backward()
    a = (xte.grad * xte).abs().mean(0).detach().numpy().astype(np.float64)  # [C, 34, 34]
    return {"per_channel": a.sum((1, 2)) / max(a.sum(), 1e-12),
            "per_pixel": a.sum(0) / max(a.sum(), 1e-12)}


def channel_names() -> list[str]:
    """Names of :func:`c2st_features`' channels, e.g. ``"T10 frame 3 p1"`` (polarity as in the files)."""
    return [f"T{T} frame {k} p{p}" for T in C2ST_T for k in range(T) for p in (0, 1)]


def c2st_accuracy(real_train: list[np.ndarray], gen_train: list[np.ndarray],
                  real_test: list[np.ndarray], gen_test: list[np.ndarray], *, seed: int = 0,
                  epochs: int = 20, batch_size: int = 64) -> float:
    """Held-out accuracy of the real-vs-generated classifier (balanced test set)."""
    return _held_out_accuracy(c2st_features, real_train, gen_train, real_test, gen_test,
                              seed=seed, epochs=epochs, batch_size=batch_size)


def _count_image(recs: list[np.ndarray], block: int = 1) -> np.ndarray:
    """``[N, 2, 34, 34]`` log1p event counts per pixel, summed over ``block x block`` blocks
    (each block's sum repeated over its pixels; the last 34 mod block rows/columns are 0)."""
    from benchmarks._s2r_stats import count_images

    f = count_images(recs)
    if block > 1:
        n, m = len(recs), 34 // block * block
        sums = f[:, :, :m, :m].reshape(n, 2, m // block, block, m // block, block).sum((3, 5))
        f = np.pad(np.repeat(np.repeat(sums, block, 2), block, 3), ((0, 0), (0, 0), (0, 34 - m), (0, 34 - m)))
    return np.log1p(f)


def _time_profile(recs: list[np.ndarray], T: int = 30) -> np.ndarray:
    """``[N, 2 T]`` log1p events per bin and polarity."""
    from benchmarks._s2r_stats import frames

    return np.log1p(frames(recs, T).sum((3, 4)).reshape(len(recs), -1))


def _moments(recs: list[np.ndarray]) -> np.ndarray:
    """``[N, 4]`` mean and std of x and y (px)."""
    return np.array([[r["x"].mean(), r["y"].mean(), r["x"].std(), r["y"].std()] for r in recs], float)


#: One statistic per view: what a classifier can tell from it alone.
C2ST_VIEWS: dict[str, Callable[[list[np.ndarray]], np.ndarray]] = {
    "event_count": lambda recs: np.log1p(np.array([[len(r)] for r in recs], float)),
    "first_last_event_ms": lambda recs: np.array([[r["t"][0] / 1e3, r["t"][-1] / 1e3] for r in recs], float),
    "centroid_and_spread": _moments,
    "active_pixels": lambda recs: np.array(
        [[np.unique(r["y"].astype(np.int64) * 34 + r["x"]).size / 100] for r in recs], float),
    "time_profile_T30": _time_profile,
    "count_image_4x4_blocks": lambda recs: _count_image(recs, 4),
    "count_image": _count_image,
}


def c2st_views(real_train: list[np.ndarray], gen_train: list[np.ndarray],
               real_test: list[np.ndarray], gen_test: list[np.ndarray], *, seed: int = 0,
               epochs: int = 20, batch_size: int = 64,
               names: tuple[str, ...] | None = None) -> dict[str, float]:
    """``{view: held-out accuracy}`` of a classifier that sees only that view
    (:data:`C2ST_VIEWS`; ``names``: only those)."""
    return {name: _held_out_accuracy(C2ST_VIEWS[name], real_train, gen_train, real_test, gen_test,
                                     seed=seed, epochs=epochs, batch_size=batch_size)
            for name in (C2ST_VIEWS if names is None else names)}
