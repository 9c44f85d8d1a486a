"""A level-crossing renderer for the C2ST studies (``c2st_integrator.py``).

The learned renderer draws a recording from the rate CNN's expected events, which average over
recordings; a real recording is one sharp instance. This renderer has the DVS's own form
instead: a learned log-intensity map ``L`` of the image (``[B, 1, 48, 48]``, the ``[28, 28]`` image
zero-padded by 10 px; three conv layers added to ``alpha * image``) is moved along the saccade
path, each sensor pixel reads ``L`` where the path puts it (bicubic), and a pixel's events in a
time step are its trace's rise (one polarity) or fall (the other) in that step times its
sensitivity ``exp(gain[p, y, x])``, i.e. divided by its threshold::

    trace[j, y, x] = L(y + offset_y - q_y[j], x + offset_x - q_x[j])     j: SUB steps per bin
    step[p, j, y, x] = exp(gain[p, y, x]) * relu(+-(trace[j + 1] - trace[j]))
    rate[p, k] = sum of step[p, j] over bin k's steps + background[p, k]

``q`` is the path (content displacement in px, ``[n_bins * SUB + 1, 2]``, learned, started from
the displacement between count maps a few bins apart); a recording may add its own per-bin
displacement ``D`` ``[n_bins, 2]`` (:mod:`benchmarks._path_latent`'s latent, linear within a
bin). The background is the shipped renderer's (fixed). With ``D`` the module's ``forward`` has
the signature of :func:`benchmarks._path_latent.path_rates_net`'s, so that module's path fit,
joint fit and path distribution apply unchanged.

Drawing (:func:`draw`) fires each pixel and polarity as a renewal process in its integrated
step rate: shape ``inf`` is the DVS's level crossing (an event each time the rise since the
last one passes the threshold, from a random phase), smaller shapes add jitter. Events of one
edge then fall where the moving map puts that edge, at once in neighbouring pixels.
"""

from __future__ import annotations

import numpy as np

SIZE = 34
PAD = 10
GRID = 28 + 2 * PAD
#: Time steps per bin of normalized time (2.5 ms at 30 bins of a 300 ms recording).
SUB = 4


def content_motion(counts: np.ndarray, lag: int = 3, max_shift: int = 4) -> np.ndarray:
    """Displacement of the recordings' content per bin ``[n_bins, 2]`` (``dy, dx`` px per bin) from
    ``counts`` ``[N, 2, n_bins, 34, 34]``: the integer shift that best aligns bin ``k``'s count
    maps with bin ``k + lag``'s (summed products over recordings and polarities), refined by a
    parabola, divided by ``lag`` and averaged over the windows that contain bin ``k``."""
    counts = np.asarray(counts, np.float64)
    nb = counts.shape[2]
    shifts = range(-max_shift, max_shift + 1)
    found = []
    for k in range(nb - lag):
        a, b = counts[:, :, k], counts[:, :, k + lag]
        score = {(dy, dx): float((a * np.roll(b, (-dy, -dx), (2, 3))).sum()) for dy in shifts for dx in shifts}
        dy, dx = max(score, key=score.get)
        sub = []
        for lo, hi in (((dy - 1, dx), (dy + 1, dx)), ((dy, dx - 1), (dy, dx + 1))):
            f0, f1, f2 = score.get(lo, 0.0), score[(dy, dx)], score.get(hi, 0.0)
            sub.append(0.5 * (f2 - f0) / (2 * f1 - f0 - f2) if 2 * f1 - f0 - f2 > 0 else 0.0)
        found.append((dy + sub[0], dx + sub[1]))
    found = np.asarray(found) / lag
    velocity = np.zeros((nb, 2))
    for k in range(nb):
        windows = [found[j] for j in range(max(0, k - lag), min(k, nb - lag - 1) + 1)]
        velocity[k] = np.mean(windows, axis=0) if windows else 0.0
    return velocity


def initial_path(velocity: np.ndarray) -> np.ndarray:
    """``[n_bins * SUB + 1, 2]`` path (px) of a velocity per bin ``[n_bins, 2]``, centred on 0."""
    steps = np.repeat(np.asarray(velocity, np.float64) / SUB, SUB, axis=0)
    path = np.vstack([np.zeros((1, 2)), np.cumsum(steps, axis=0)])
    return path - path.mean(0)


def integrator_net(background: np.ndarray, path: np.ndarray, rising: int = 1, hidden: int = 16):
    """The renderer as a torch module (module docstring): ``background`` ``[2, n_bins, 34, 34]``
    expected background events, ``path`` ``[n_bins * SUB + 1, 2]`` its start (px), ``rising``
    the polarity that a rising trace fires."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    n_bins = background.shape[1]
    if path.shape != (n_bins * SUB + 1, 2) or rising not in (0, 1):
        raise ValueError(f"path has the shape {path.shape}, expected {(n_bins * SUB + 1, 2)}; "
                         f"rising = {rising}, expected 0 or 1")

    class Integrator(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.n_bins, self.rising = n_bins, rising
            self.conv1 = nn.Conv2d(1, hidden, 5, padding=2)
            self.conv2 = nn.Conv2d(hidden, hidden, 5, padding=2)
            self.conv3 = nn.Conv2d(hidden, 1, 3, padding=1)
            nn.init.zeros_(self.conv3.weight)
            nn.init.zeros_(self.conv3.bias)
            self.alpha = nn.Parameter(torch.tensor(3.0))
            self.path = nn.Parameter(torch.from_numpy(np.asarray(path, np.float32)))
            # sensor (y, x) reads L at (y, x) + offset - q; learned (the fit moves it by under 1.5 px)
            self.offset = nn.Parameter(torch.tensor([PAD + 1.0, PAD + 1.0]))
            self.gain = nn.Parameter(torch.zeros(2, SIZE, SIZE))
            self.register_buffer("background", torch.from_numpy(np.asarray(background, np.float32)))

        def conv_out(self, images):
            """The log-intensity map ``[B, 1, 48, 48]`` of ``images`` ``[B, 28, 28]``."""
            x = F.pad(images.unsqueeze(1), (PAD,) * 4)
            h = torch.relu(self.conv2(torch.relu(self.conv1(x))))
            return self.alpha * x + self.conv3(h)

        def trace(self, images, displacement=None, conv_out=None):
            """Each pixel's log intensity at every step edge ``[B, n_bins * SUB + 1, 34, 34]``."""
            lmap = self.conv_out(images) if conv_out is None else conv_out
            b, j = lmap.shape[0], self.path.shape[0]
            q = self.path.unsqueeze(0).expand(b, -1, -1)
            if displacement is not None:  # per bin -> per step edge, linear between bin centres
                tb = (torch.arange(j, dtype=q.dtype) / SUB - 0.5).clamp(0, n_bins - 1)
                lo = tb.floor().long()
                hi = (lo + 1).clamp(max=n_bins - 1)
                w = (tb - lo)[None, :, None]
                q = q + displacement[:, lo] * (1 - w) + displacement[:, hi] * w
            grid = torch.arange(SIZE, dtype=q.dtype)
            py = grid[None, None, :, None] + self.offset[0] - q[..., 0, None, None]
            px = grid[None, None, None, :] + self.offset[1] - q[..., 1, None, None]
            py, px = torch.broadcast_tensors(py, px)
            where = torch.stack([(px + 0.5) * 2 / GRID - 1, (py + 0.5) * 2 / GRID - 1], -1)
            out = F.grid_sample(lmap, where.reshape(b, j * SIZE, SIZE, 2), mode="bicubic",
                                padding_mode="border", align_corners=False)
            return out.reshape(b, j, SIZE, SIZE)

        def step_events(self, images, displacement=None, conv_out=None):
            """Expected signal events per polarity and step ``[B, 2, n_bins * SUB, 34, 34]``."""
            d = torch.diff(self.trace(images, displacement, conv_out), dim=1)
            up, down = torch.relu(d), torch.relu(-d)
            pair = (down, up) if self.rising == 1 else (up, down)
            return torch.stack(pair, 1) * torch.exp(self.gain)[None, :, None]

        def forward(self, images, displacement, conv_out=None):
            steps = self.step_events(images, displacement, conv_out)
            b = steps.shape[0]
            return steps.reshape(b, 2, n_bins, SUB, SIZE, SIZE).sum(3) + self.background[None]

    return Integrator()


def fit_warmup(net, images: np.ndarray, counts: np.ndarray, *, epochs: int, seed: int,
               batch_size: int = 25, log=print) -> None:
    """``epochs`` of Adam on all of ``net``'s parameters along the mean path (Poisson likelihood
    of ``counts`` ``[N, 2, n_bins, 34, 34]``), before :func:`~benchmarks._path_latent.fit_jointly`."""
    import time

    import torch

    from benchmarks._path_latent import train_epoch

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    slow = [p for name, p in net.named_parameters() if name not in ("path", "offset")]
    opt = torch.optim.Adam([{"params": slow, "lr": 3e-3}, {"params": [net.path, net.offset], "lr": 1e-2}])
    x, y = torch.from_numpy(images.astype(np.float32)), torch.from_numpy(counts.astype(np.float32))
    t0 = time.perf_counter()
    for epoch in range(epochs):
        loss = train_epoch(net, opt, x, y, None, gen, batch_size)
        if epoch % 10 == 9 or epoch == epochs - 1:
            log(f"  integrator warm-up: epoch {epoch + 1}/{epochs}, NLL per cell {loss:.5f} "
                f"({time.perf_counter() - t0:.0f} s)")


def step_rates(net, images: np.ndarray, displacement: np.ndarray | None, *,
               per_bin: bool = False) -> np.ndarray:
    """The expected signal events of ``images`` ``[N, 28, 28]`` along ``displacement`` ``[N,
    n_bins, 2]`` (None: the mean path) as float64, ``[N, 2, n_bins * SUB, 34, 34]`` per step or,
    ``per_bin``, ``[N, 2, n_bins, 34, 34]`` summed over each bin's steps; in chunks of 50."""
    import torch

    out = []
    with torch.no_grad():
        for i in range(0, len(images), 50):
            d = None if displacement is None else torch.from_numpy(displacement[i:i + 50].astype(np.float32))
            steps = net.step_events(torch.from_numpy(images[i:i + 50].astype(np.float32)), d)
            if per_bin:
                steps = steps.reshape(*steps.shape[:2], net.n_bins, SUB, SIZE, SIZE).sum(3)
            out.append(steps.double().numpy())
    return np.concatenate(out)


def draw(steps: np.ndarray, extra: np.ndarray, rng: np.random.Generator, *, shape: float,
         duration_mean_us: float, duration_std_us: float) -> np.ndarray:
    """One recording (``EVENT_DTYPE``, sorted by t in µs): ``steps`` ``[2, n_bins * SUB, 34, 34]``
    expected events per step fire as renewal processes of ``shape`` (``inf``: level crossings
    from a random phase); ``extra`` ``[2, n_bins, 34, 34]`` (background and any part the steps
    leave out) as Poisson processes over whole bins."""
    from flexsnn.data.learned_dvs import _renewal, events_at

    n_steps, n_bins = steps.shape[1], extra.shape[1]
    rows = steps.transpose(0, 2, 3, 1).reshape(-1, n_steps)
    if np.isinf(shape):
        ch, u = _crossings(rows, rng)
    else:
        ch, u = _renewal(rows, shape, rng)
    ch_bg, u_bg = _renewal(extra.transpose(0, 2, 3, 1).reshape(-1, n_bins), 1.0, rng)
    duration = max(rng.normal(duration_mean_us, duration_std_us), 1.0)
    return events_at(np.concatenate([ch, ch_bg]), np.concatenate([u, u_bg]), duration)


def _crossings(rows: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Level crossings of each row's integrated rate ``[channel, step]`` from a uniform random
    phase: the channel of each event and its normalized time (uniform within its step)."""
    level = np.floor(np.cumsum(rows, axis=1) + rng.random((rows.shape[0], 1)))
    n = np.diff(level, axis=1, prepend=0.0).astype(np.int64)
    ch, step = np.nonzero(n)
    reps = n[ch, step]
    ch, step = np.repeat(ch, reps), np.repeat(step, reps)
    return ch, (step + rng.random(step.size)) / rows.shape[1]


def save_fit(path, net, displacement: np.ndarray) -> None:
    """Write ``net``'s parameters, its rising polarity and the fit half's displacements ``[N,
    n_bins, 2]`` to ``path`` (``.npz``, atomically; read back by :func:`load_fit`)."""
    import io

    from flexsnn.io_utils import atomic_write_bytes

    arrays = {f"param_{k}": v.detach().numpy() for k, v in net.state_dict().items()}
    buf = io.BytesIO()
    np.savez(buf, rising=np.array(net.rising), displacement=displacement, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def load_fit(path, background: np.ndarray):
    """The net and the fit half's displacements that :func:`save_fit` wrote (no pickle)."""
    import torch

    try:
        with np.load(path, allow_pickle=False) as z:
            state = {k[len("param_"):]: torch.from_numpy(z[k]) for k in z.files if k.startswith("param_")}
            net = integrator_net(background, state["path"].numpy(), int(z["rising"]))
            net.load_state_dict(state)
            return net, z["displacement"]
    except (OSError, KeyError, ValueError, RuntimeError) as err:
        raise ValueError(f"{path} is not an integrator fit of this renderer ({err}); delete it to "
                         "refit, or pass another file") from err
