"""The hardware-in-the-loop suite can fail without hardware: a deliberately broken simulator
rule (monkeypatched) makes `pytest hwtests --backend sim` (and `--backend reference`) fail,
while the unbroken simulator passes. The broken rules: the event order (breadth-first instead
of depth-first, visible only on the suite's branch-merge images) and the reset (zero instead of
subtract)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from flexsnn.commands.hwtest import HWTESTS_DIR
from flexsnn.deploy import async_sim
from flexsnn.deploy import kernels as K


def _run_suite(tmp_path, backend: str, select: str) -> dict:
    out = tmp_path / f"rep-{backend}"
    code = pytest.main([str(HWTESTS_DIR), "-q", "-p", "no:cacheprovider", f"--backend={backend}",
                        f"--hw-report={out}", "-k", select])
    doc = json.loads((out / "hwtest_report.json").read_text())
    doc["code"] = int(code)
    return doc


def _break_event_order(monkeypatch):
    original = async_sim.AsyncSimulator.__init__

    def init(self, config=None, **options):
        original(self, config, **options)
        self.config = replace(self.config, order="breadth-first")  # the broken rule

    monkeypatch.setattr(async_sim.AsyncSimulator, "__init__", init)


def _break_reset(monkeypatch):
    original = async_sim.pack_image

    def pack(image):
        packed = original(image)
        packed.geom[:, K.G_RESET_ZERO] = 1 - packed.geom[:, K.G_RESET_ZERO]  # subtract <-> zero
        return packed

    monkeypatch.setattr(async_sim, "pack_image", pack)


SELECT = "agreement_exact and cores2-3-4 and 0"


def test_unbroken_simulator_passes(tmp_path):
    doc = _run_suite(tmp_path, "sim", SELECT)
    assert doc["code"] == 0 and doc["counts"]["passed"] == 2 and doc["counts"]["failed"] == 0
    assert {t["metrics"]["compared_with"] for t in doc["tests"]} == {"reference"}


@pytest.mark.parametrize("backend", ["sim", "reference"])
def test_broken_event_order_fails_the_suite_on_merges_only(tmp_path, monkeypatch, backend):
    _break_event_order(monkeypatch)
    doc = _run_suite(tmp_path, backend, SELECT)
    outcomes = {t["id"].split("[")[-1].rstrip("]"): t["outcome"] for t in doc["tests"]}
    assert doc["code"] == 1 and doc["passed"] is False
    assert outcomes == {f"{backend}-cores2-3-4-0-chain": "passed", f"{backend}-cores2-3-4-0-merge": "failed"}


def test_broken_reset_fails_the_suite(tmp_path, monkeypatch):
    _break_reset(monkeypatch)
    doc = _run_suite(tmp_path, "sim", SELECT)
    assert doc["code"] == 1 and doc["counts"]["failed"] == 2
    failed = [t for t in doc["tests"] if t["outcome"] == "failed"]
    assert all("differs from reference" in t["reason"] for t in failed)
