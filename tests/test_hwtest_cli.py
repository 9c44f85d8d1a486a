"""`flexsnn hwtest`: runs the hardware-in-the-loop suite, writes the JSON + markdown report,
maps failures to exit codes; the report builder on its own."""

from __future__ import annotations

import json
from types import SimpleNamespace

from flexsnn.cli import main
from flexsnn.hwtests.report import build_report, collect_outcome, render_markdown


def test_hwtest_sim_writes_report(tmp_path, capsys):
    out = tmp_path / "rep"
    code = main(["hwtest", "--backend", "both", "-k", "single_neuron_identity and 3", "--out", str(out)])
    assert code == 0
    doc = json.loads((out / "hwtest_report.json").read_text())
    assert doc["backend"] == "both" and doc["passed"] is True
    outcomes = {t["id"].split("::")[-1]: t for t in doc["tests"]}
    assert outcomes["test_single_neuron_identity[sim-3]"]["outcome"] == "passed"
    assert outcomes["test_single_neuron_identity[sim-3]"]["metrics"] == {"inputs": 200, "outputs": 200}
    skipped = outcomes["test_single_neuron_identity[speck2e-3]"]
    assert skipped["outcome"] == "skipped" and "devkit unavailable" in skipped["reason"]
    assert {"machine", "git", "suite", "counts"} <= set(doc)
    md = (out / "hwtest_report.md").read_text()
    assert "test_single_neuron_identity[sim-3] | passed" in md
    assert "report:" in capsys.readouterr().out


def test_hwtest_failure_gives_nonzero_exit(tmp_path, capsys):
    suite = json.loads((__import__("flexsnn.commands.hwtest", fromlist=["x"]).HWTESTS_DIR / "suite.json").read_text())
    suite["agreement"]["stochastic_rel_tolerance"] = -1.0  # impossible: every statistical test fails
    path = tmp_path / "suite.json"
    path.write_text(json.dumps(suite))
    out = tmp_path / "rep"
    code = main(["hwtest", "--suite", str(path), "-k", "statistical and sim and 0-1-5-0 and chain", "--out", str(out)])
    assert code == 1
    doc = json.loads((out / "hwtest_report.json").read_text())
    assert doc["passed"] is False and doc["counts"]["failed"] == 1
    assert "FAILED" in capsys.readouterr().err


def test_hwtest_refuses_bad_arguments(tmp_path, capsys):
    assert main(["hwtest", "--checkpoint", str(tmp_path / "none.safetensors")]) == 1
    assert "checkpoint not found" in capsys.readouterr().err
    assert main(["hwtest", "--backend", "gpu"]) == 1
    assert "sim, speck2e or both" in capsys.readouterr().err
    assert main(["hwtest", "--data", str(tmp_path / "nowhere")]) == 1


def test_report_builder_counts_and_renders():
    outcomes: dict = {}
    for nodeid, when, outcome, longrepr in [
        ("a::t1", "setup", "passed", None), ("a::t1", "call", "passed", None), ("a::t1", "teardown", "passed", None),
        ("a::t2", "setup", "skipped", ("f.py", 3, "Skipped: no devkit")),
        ("a::t3", "setup", "passed", None), ("a::t3", "call", "failed", None), ("a::t3", "teardown", "passed", None),
    ]:
        collect_outcome(outcomes, SimpleNamespace(nodeid=nodeid, when=when, outcome=outcome, longrepr=longrepr,
                                                  duration=0.5, longreprtext="AssertionError: boom"))
    assert [outcomes[k]["outcome"] for k in ("a::t1", "a::t2", "a::t3")] == ["passed", "skipped", "failed"]
    assert outcomes["a::t2"]["reason"] == "Skipped: no devkit"
    metrics = {"a::t1": {"accuracy": 0.9, "simulator_accuracy": 0.92, "gap_to_simulator": 0.02}}
    doc = build_report(backend="sim", suite={}, outcomes=outcomes, metrics=metrics, exitstatus=1)
    assert doc["counts"] == {"passed": 1, "failed": 1, "skipped": 1} and doc["passed"] is False
    assert list(doc["accuracy"]) == ["a::t1"]
    md = render_markdown(doc)
    assert "**FAIL**" in md and "| a::t1 | 0.9 | 0.92 | 0.02 |" in md and "AssertionError: boom" in md


def test_suite_devkit_path_runs_against_the_samna_double(tmp_path):
    """The suite's speck2e parameter end to end (factory options from suite.json, reset writes,
    relative timestamps, decoding, report) with the samna device double as the chip."""
    import pytest

    from flexsnn.commands.hwtest import HWTESTS_DIR

    suite = json.loads((HWTESTS_DIR / "suite.json").read_text())
    suite["speck2e"].update(config_settle_s=0.0, quiet_s=0.01)
    path = tmp_path / "suite.json"
    path.write_text(json.dumps(suite))
    out = tmp_path / "rep"
    code = pytest.main([str(HWTESTS_DIR), "-q", "-p", "no:cacheprovider", "-p", "doubles.hwsuite_devkit_plugin",
                        "--backend=speck2e", f"--suite={path}", f"--hw-report={out}", "-k", "single_neuron_identity"])
    assert code == 0
    doc = json.loads((out / "hwtest_report.json").read_text())
    assert doc["counts"] == {"passed": 7, "failed": 0, "skipped": 0}
    assert all(t["metrics"] == {"inputs": 200, "outputs": 200} for t in doc["tests"])


def test_hwtest_on_a_chip_image_with_the_reference_backend(tmp_path, capsys):
    """`flexsnn hwtest --chip X.chip --backend reference`: the chip-agreement test runs on the given
    image (reference vs simulator) and passes; a damaged image is refused before the suite."""
    from chip_builders import nmnist_image

    chip = nmnist_image(0).save(tmp_path / "n.chip")
    out = tmp_path / "rep"
    code = main(["hwtest", "--backend", "reference", "--chip", str(chip), "-k", "given_chip", "--out", str(out)])
    assert code == 0
    doc = json.loads((out / "hwtest_report.json").read_text())
    (test,) = doc["tests"]
    assert test["outcome"] == "passed" and test["metrics"]["compared_with"] == "async"
    assert test["metrics"]["output_spikes"] > 0
    bad = tmp_path / "bad.chip"
    bad.write_bytes(chip.read_bytes()[:300])
    assert main(["hwtest", "--chip", str(bad)]) == 1
    assert "not a readable chip image" in capsys.readouterr().err
