from flexsnn.cli import main


def test_root_help_lists_flow(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "flexsnn data prepare" in out and "COMMAND --help" in out


def test_unknown_command_is_usage_error(capsys):
    assert main(["no-such-command"]) == 2
