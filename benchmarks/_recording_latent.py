"""Per-recording latents of the learned renderer's rates, fitted to one real recording each
(``c2st_latent_bound.py``).

Four kinds, each a way one N-MNIST recording can depart from the renderer's mean without any
change to the image, and each with a Gaussian prior (MAP fit):

* ``path``: the saccade path's displacement per bin ``[B, n_bins, 2]`` (``dy, dx`` px) of
  ``_path_latent`` (prior sd 0.3 px, 0.1 px from bin to bin);
* ``registration``: where the image sits on the sensor, ``[B, 4]`` = log scale y, log scale x,
  shift y, shift x (px), applied to the image before the rate CNN (prior sd 5 %, 5 %, 0.5 px,
  0.5 px);
* ``gain``: a log gain per polarity and bin ``[B, 2, n_bins]`` on the signal (prior sd 0.3, and
  0.1 from bin to bin): the monitor's or the bias's drift, a saccade brighter than the others;
* ``field``: a smooth deformation, ``[B, 3, 2, 5, 5]`` px on a 5 x 5 grid per saccade (a third of
  the recording), upsampled bicubically to the sensor and added to the path (prior sd 0.3 px).

The rates along a latent::

    rate = exp(displace(conv_out(warp(image, registration)), path + field) + gain_map
               + gain[p, k]) * exp(gain_pt) + noise
"""

from __future__ import annotations

import numpy as np

from benchmarks._path_latent import SIZE, displace_maps, nll_per_recording, path_prior

#: The latents' names, in the order families are built from them.
KINDS = ("path", "registration", "gain", "field")
#: Prior sds: registration (log sy, log sx, ty px, tx px), gain (level, change per bin), field (px).
REGISTRATION_SD = (0.05, 0.05, 0.5, 0.5)
GAIN_SD, GAIN_STEP_SD = 0.3, 0.1
FIELD_SD_PX = 0.3
#: The field's grid: ``FIELD_SEGMENTS`` parts of the recording, ``FIELD_GRID`` x ``FIELD_GRID`` knots.
FIELD_SEGMENTS, FIELD_GRID = 3, 5
IMAGE = 28


def zero_latent(n: int, n_bins: int) -> dict[str, np.ndarray]:
    """All four latents at zero (float32) for ``n`` recordings: the renderer's own rates."""
    return {"path": np.zeros((n, n_bins, 2), np.float32), "registration": np.zeros((n, 4), np.float32),
            "gain": np.zeros((n, 2, n_bins), np.float32),
            "field": np.zeros((n, FIELD_SEGMENTS, 2, FIELD_GRID, FIELD_GRID), np.float32)}


def warp_images(images, registration):
    """``images`` ``[B, 28, 28]`` (torch) scaled about their centre by ``exp(registration[:, :2])``
    (y, x) and moved by ``registration[:, 2:]`` px (down, right); bicubic, zero outside."""
    import torch
    from torch.nn import functional as F

    b = len(images)
    inv_sy, inv_sx = torch.exp(-registration[:, 0]), torch.exp(-registration[:, 1])
    zero = torch.zeros_like(inv_sx)
    # output (x, y) reads the input at ((x - tx) / sx, (y - ty) / sy), in grid units of 2 / 28
    theta = torch.stack([torch.stack([inv_sx, zero, -registration[:, 3] * 2 / IMAGE * inv_sx], 1),
                         torch.stack([zero, inv_sy, -registration[:, 2] * 2 / IMAGE * inv_sy], 1)], 1)
    grid = F.affine_grid(theta, (b, 1, IMAGE, IMAGE), align_corners=False)
    return F.grid_sample(images.unsqueeze(1), grid, mode="bicubic", padding_mode="zeros",
                         align_corners=False)[:, 0]


def field_displacement(field, n_bins: int):
    """``field`` ``[B, FIELD_SEGMENTS, 2, g, g]`` (px, torch) as a displacement per bin and pixel
    ``[B, n_bins, 2, 34, 34]`` (each bin takes its segment's field)."""
    import torch
    from torch.nn import functional as F

    b, s = field.shape[:2]
    up = F.interpolate(field.reshape(b, s * 2, *field.shape[-2:]), size=(SIZE, SIZE), mode="bicubic",
                       align_corners=True).reshape(b, s, 2, SIZE, SIZE)
    return up[:, torch.clamp(torch.arange(n_bins) * s // n_bins, max=s - 1)]


def latent_rates(net, images, latent: dict, kinds: tuple[str, ...]):
    """Rates ``[B, 2, n_bins, 34, 34]`` of ``net`` (``_path_latent.path_rates_net``) for
    ``images`` ``[B, 28, 28]`` given the torch ``latent`` arrays of ``kinds`` (others: zero)."""
    x = warp_images(images, latent["registration"]) if "registration" in kinds else images
    o = net.conv_out(x)
    disp = latent["path"][..., None, None] if "path" in kinds else None
    if "field" in kinds:
        f = field_displacement(latent["field"], net.n_bins)
        disp = f if disp is None else disp + f
    if disp is not None:
        o = displace_maps(o, disp)
    logit = o + net.gain
    if "gain" in kinds:
        logit = logit + latent["gain"][..., None, None]
    return net.sensor(logit)


def latent_prior(latent: dict, kinds: tuple[str, ...]):
    """Negative log prior per recording ``[B]`` of the torch ``latent`` arrays of ``kinds``."""
    total = 0.0
    if "path" in kinds:
        total = total + path_prior(latent["path"])
    if "registration" in kinds:
        sd = latent["registration"].new_tensor(REGISTRATION_SD)
        total = total + ((latent["registration"] / sd) ** 2).sum(1) / 2
    if "gain" in kinds:
        g = latent["gain"]
        total = total + (g ** 2).sum((1, 2)) / (2 * GAIN_SD ** 2) \
            + ((g[..., 1:] - g[..., :-1]) ** 2).sum((1, 2)) / (2 * GAIN_STEP_SD ** 2)
    if "field" in kinds:
        total = total + (latent["field"] ** 2).sum((1, 2, 3, 4)) / (2 * FIELD_SD_PX ** 2)
    return total


def fit_latents(net, images: np.ndarray, counts: np.ndarray, kinds: tuple[str, ...], *,
                steps: int = 60, lr: float = 0.03, chunk: int = 100,
                progress=None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """MAP latents of ``kinds`` for each recording (``counts`` ``[N, 2, n_bins, 34, 34]`` of
    ``images`` ``[N, 28, 28]``; ``net`` fixed, its parameters left not requiring gradients; Adam,
    ``steps`` full-chunk steps) and the gain in log likelihood over the zero latent per recording
    (nats, ``[N]``). ``progress(n)`` is called
    with the number of recordings of each chunk when it is done."""
    import torch

    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown latent kinds {sorted(unknown)}; known: {', '.join(KINDS)}")
    for p in net.parameters():
        p.requires_grad_(False)
    found: dict[str, list[np.ndarray]] = {k: [] for k in KINDS}
    gains = []
    for i in range(0, len(images), chunk):
        x = torch.from_numpy(images[i:i + chunk].astype(np.float32))
        y = torch.from_numpy(counts[i:i + chunk].astype(np.float32))
        lat = {k: torch.from_numpy(v) for k, v in zero_latent(len(x), net.n_bins).items()}
        with torch.no_grad():
            before = nll_per_recording(latent_rates(net, x, lat, ()), y)
        free = [lat[k].requires_grad_(True) for k in kinds]
        opt = torch.optim.Adam(free, lr=lr)
        for _ in range(steps):
            opt.zero_grad()
            (nll_per_recording(latent_rates(net, x, lat, kinds), y) + latent_prior(lat, kinds)).sum().backward()
            opt.step()
        with torch.no_grad():
            after = nll_per_recording(latent_rates(net, x, lat, kinds), y)
        gains.append((before - after).numpy())
        for k in KINDS:
            found[k].append(lat[k].detach().numpy())
        if progress is not None:
            progress(len(x))
    return {k: np.concatenate(v) for k, v in found.items()}, np.concatenate(gains)


def rates_given(net, images: np.ndarray, latent: dict[str, np.ndarray], kinds: tuple[str, ...],
                chunk: int = 100) -> np.ndarray:
    """``net``'s rates ``[N, 2, n_bins, 34, 34]`` (float64) of ``images`` along the numpy ``latent``."""
    import torch

    out = []
    with torch.no_grad():
        for i in range(0, len(images), chunk):
            lat = {k: torch.from_numpy(v[i:i + chunk]) for k, v in latent.items()}
            out.append(latent_rates(net, torch.from_numpy(images[i:i + chunk].astype(np.float32)),
                                    lat, kinds).double().numpy())
    return np.concatenate(out)
