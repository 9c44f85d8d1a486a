"""The hardware-in-the-loop report: per-test outcome and metrics -> JSON and markdown.

Written by the suite's ``pytest_sessionfinish`` when ``--hw-report DIR`` is given (the
``flexsnn hwtest`` command passes it). JSON keys: ``backend``, ``exitstatus``, ``passed``
(bool), ``counts`` (passed/failed/skipped), ``tests`` (list of ``{id, outcome, duration_s,
reason, metrics}``), ``accuracy`` (the accuracy tests' metrics), ``session`` (session metrics,
e.g. quick-training time), ``suite`` (the suite config used), ``machine``, ``git``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flexsnn.io_utils import atomic_write_json, atomic_write_text, git_hash, machine_info

JSON_NAME = "hwtest_report.json"
MD_NAME = "hwtest_report.md"


def collect_outcome(outcomes: dict[str, dict], report: Any) -> None:
    """Record one pytest ``TestReport``: the call phase's outcome, or a setup/teardown failure
    or skip (with its reason)."""
    nodeid = report.nodeid
    entry = outcomes.setdefault(nodeid, {"outcome": "unknown", "duration_s": 0.0, "reason": ""})
    entry["duration_s"] = round(entry["duration_s"] + float(getattr(report, "duration", 0.0)), 4)
    if report.when == "call" or report.outcome in ("failed", "skipped"):
        if entry["outcome"] in ("failed",) and report.when == "teardown":
            return
        entry["outcome"] = report.outcome
        if report.outcome == "skipped":
            lr = report.longrepr
            entry["reason"] = str(lr[2]) if isinstance(lr, tuple) and len(lr) == 3 else str(lr)
        elif report.outcome == "failed":
            # the assertion's own message first: a long diff after it must not push it out
            crash = str(getattr(getattr(report.longrepr, "reprcrash", None), "message", "") or "")
            text = str(getattr(report, "longreprtext", ""))
            entry["reason"] = f"{crash[:1000]}\n{text[-1500:]}" if crash else text[-2000:]
    if report.when == "setup" and report.outcome == "passed" and entry["outcome"] == "unknown":
        entry["outcome"] = "passed"


def build_report(*, backend: str, suite: dict, outcomes: dict[str, dict], metrics: dict[str, dict],
                 exitstatus: int) -> dict[str, Any]:
    """The JSON-able report document."""
    tests = [{"id": k, **v, "metrics": metrics.get(k, {})} for k, v in outcomes.items()]
    counts = {o: sum(1 for t in tests if t["outcome"] == o) for o in ("passed", "failed", "skipped")}
    accuracy = {t["id"]: t["metrics"] for t in tests if "accuracy" in t["metrics"]}
    return {
        "backend": backend,
        "exitstatus": exitstatus,
        "passed": counts["failed"] == 0 and exitstatus in (0, 5),
        "counts": counts,
        "tests": tests,
        "accuracy": accuracy,
        "session": metrics.get("session", {}),
        "suite": suite,
        "machine": machine_info(),
        "git": git_hash(),
    }


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def render_markdown(doc: dict[str, Any]) -> str:
    """A markdown summary of :func:`build_report`'s document."""
    c = doc["counts"]
    lines = [f"# flexsnn hardware-in-the-loop report ({doc['backend']})", "",
             f"**{'PASS' if doc['passed'] else 'FAIL'}**: {c['passed']} passed, {c['failed']} failed, "
             f"{c['skipped']} skipped (git {doc['git']})", ""]
    if doc["accuracy"]:
        lines += ["## Accuracy", "", "Gap: against a run the backend was not derived from (the reference "
                  "for sim, the simulator for the reference and the devkit).", "",
                  "| test | accuracy | comparison run | gap | threshold | samples/s | "
                  "median latency to decision (ms) |", "|---|---|---|---|---|---|---|"]
        for tid, m in doc["accuracy"].items():
            lines.append("| " + " | ".join([tid, _fmt(m.get("accuracy")), _fmt(m.get("simulator_accuracy")),
                                            _fmt(m.get("gap_to_simulator")), _fmt(m.get("threshold")),
                                            _fmt(m.get("throughput_samples_per_s")),
                                            _fmt(m.get("latency_to_decision_ms_median"))]) + " |")
        lines.append("")
    lines += ["## Tests", "", "| test | outcome | s | metrics / reason |", "|---|---|---|---|"]
    for t in doc["tests"]:
        extra = ", ".join(f"{k}={_fmt(v)}" for k, v in t["metrics"].items()) if t["metrics"] else ""
        if t["outcome"] != "passed" and t["reason"]:
            extra = (extra + "; " if extra else "") + t["reason"].splitlines()[0][:200].replace("|", "/")
        lines.append(f"| {t['id']} | {t['outcome']} | {t['duration_s']:.2f} | {extra} |")
    if doc["session"]:
        lines += ["", "Session: " + ", ".join(f"{k}={_fmt(v)}" for k, v in doc["session"].items())]
    return "\n".join(lines) + "\n"


def write_reports(out_dir: Path, *, backend: str, suite: dict, outcomes: dict[str, dict],
                  metrics: dict[str, dict], exitstatus: int) -> tuple[Path, Path]:
    """Write ``hwtest_report.json`` and ``hwtest_report.md`` into ``out_dir`` (atomically)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = build_report(backend=backend, suite=suite, outcomes=outcomes, metrics=metrics, exitstatus=exitstatus)
    json_path, md_path = out_dir / JSON_NAME, out_dir / MD_NAME
    atomic_write_json(json_path, doc)
    atomic_write_text(md_path, render_markdown(doc))
    return json_path, md_path
