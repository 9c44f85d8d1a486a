"""Classifier two-sample test (C2ST) of generated vs real recordings of the same images.

A small CNN sees what the SNN sees, binned count frames (T = 3, 5 and 10 stacked as channels,
both polarities, ``log1p`` counts: ``[36, 34, 34]``), and learns to tell real (label 1) from
generated (label 0) recordings. It trains on the pairs of the fit half and is tested on the
pairs of the held-out half, so no image is on both sides. Held-out accuracy 0.5 means the two
sets are indistinguishable to it; 1.0 means every recording gives itself away.
"""

from __future__ import annotations

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


def c2st_accuracy(real_train: list[np.ndarray], gen_train: list[np.ndarray],
                  real_test: list[np.ndarray], gen_test: list[np.ndarray], *, seed: int = 0,
                  epochs: int = 20, batch_size: int = 64) -> float:
    """Held-out accuracy of the real-vs-generated classifier (balanced test set)."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    xtr = torch.from_numpy(np.concatenate([c2st_features(real_train), c2st_features(gen_train)]))
    ytr = torch.cat([torch.ones(len(real_train)), torch.zeros(len(gen_train))]).long()
    xte = torch.from_numpy(np.concatenate([c2st_features(real_test), c2st_features(gen_test)]))
    yte = torch.cat([torch.ones(len(real_test)), torch.zeros(len(gen_test))]).long()
    net = _net(xtr.shape[1])
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
    with torch.no_grad():
        pred = net(xte).argmax(1)
    return float((pred == yte).float().mean())
