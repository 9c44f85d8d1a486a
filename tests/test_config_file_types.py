"""`flexsnn train --config FILE`: every value's JSON type is checked before use and refused by
file, field and value (``"lr": "fast"``), through the command line too."""

from __future__ import annotations

import json

import pytest

from flexsnn.cli import main
from flexsnn.commands.train import resolve_train_config
from flexsnn.errors import ConfigError


@pytest.mark.parametrize("doc,field,expected", [
    ({"lr": "fast"}, "lr", "number"), ({"epochs": 2.5}, "epochs", "integer"),
    ({"epochs": True}, "epochs", "integer"), ({"augment": "no"}, "augment", "true"),
    ({"scheme": {"s": "x"}}, "scheme.s", "integer"), ({"scheme": [1]}, "scheme", "JSON object"),
    ({"model_kwargs": [1]}, "model_kwargs", "JSON object"), ({"limit": "all"}, "limit", "integer"),
])
def test_wrong_types_refused_by_field(tmp_path, doc, field, expected):
    f = tmp_path / "c.json"
    f.write_text(json.dumps(doc))
    with pytest.raises(ConfigError) as err:
        resolve_train_config(f, {}, {})
    assert err.value.field == f"{f}: {field}" and expected in err.value.expected
    assert "fix the value in the config file" in str(err.value)


def test_valid_types_accepted(tmp_path):
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"lr": 1, "limit": None, "grad_clip": 0.5, "scheme": {"name": "mtt", "t_max": None}}))
    cfg = resolve_train_config(f, {}, {})
    assert cfg.lr == 1 and cfg.limit is None and cfg.scheme.name == "mtt"


@pytest.mark.parametrize("text,reason", [('{"lr": NaN}', "NaN"), ('{"epochs": ' + "9" * 5000 + "}", "4300 digits"),
                                         ('{"lr": ', "not valid JSON")])
def test_unparsable_values_refused(tmp_path, text, reason):
    f = tmp_path / "c.json"
    f.write_text(text)
    with pytest.raises(ConfigError, match=reason):
        resolve_train_config(f, {}, {})


def test_cli_names_the_field(tmp_path, capsys):
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"lr": "fast"}))
    assert main(["train", "--config", str(f), "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert "lr='fast' is invalid: expected a" in err and "number" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
