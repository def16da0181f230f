"""The ``vecl`` dispatcher reaches each sub-command's own parser."""

import pytest

from monai_vecl.cli import COMMANDS, main


def test_unknown_command_prints_usage(capsys):
    assert main(["nope"]) == 2
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_subcommand_help_comes_from_its_module(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    assert exit_info.value.code == 0
    assert "usage:" in capsys.readouterr().out
