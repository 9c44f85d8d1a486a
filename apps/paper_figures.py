"""Published figures that flexsnn's results are set beside (demo report, reproduce)."""

from __future__ import annotations

#: The MTT paper's Speck2e table (seed, Table 7; and its published version): N-MNIST test
#: accuracy of the float model on GPU at T = 10 and of the same net on a Speck2e devkit.
PAPER_SPECK_TABLE: dict[str, dict[str, dict[str, float]]] = {
    "preprint": {"sdt": {"gpu": 0.9861, "chip": 0.9618}, "mtt": {"gpu": 0.9779, "chip": 0.9850}},
    "published": {"sdt": {"gpu": 0.9809, "chip": 0.9277}, "mtt": {"gpu": 0.9916, "chip": 0.9857}},
}

