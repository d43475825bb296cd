"""The command line's shape: commands in workflow sections, `m3net --help` without torch, one spelling for
list options."""
import dataclasses
import subprocess
import sys

import click
import pytest

from m3net.cli import SECTIONS, main
from m3net.config import ConfigError, Settings, config_params, setting, settings


def test_every_command_is_in_exactly_one_section_and_listed_in_that_order():
    listed = [name for names in SECTIONS.values() for name in names]
    assert sorted(listed) == sorted(main.commands) and len(set(listed)) == len(listed)
    text = subprocess.run([sys.executable, "-m", "m3net", "--help"], capture_output=True, text=True, check=True).stdout
    assert [line.split()[0] for line in text.splitlines() if line.startswith("  ") and line.split()[0] in listed] \
        == listed
    headings = [text.index(f"\n{section}:\n") for section in SECTIONS]
    assert headings == sorted(headings) and list(SECTIONS)[:3] == ["Pipeline", "Inspection", "Benchmarks"]


def test_listing_the_commands_imports_no_torch():
    code = ("import sys; from click.testing import CliRunner; from m3net.cli import main; "
            "result = CliRunner().invoke(main, ['--help']); assert result.exit_code == 0, result.output; "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@settings
class _Lists(Settings):
    seeds: tuple = setting((), "Seeds.", minimum=0, item=int)
    shots: tuple = setting((1, 5), "Shots.", option="--shot")
    clips: tuple = setting((), "Clips.", path="any", option="--clip")


def _parse(args):
    command = click.Command("lists", params=config_params(_Lists), callback=lambda **options: _Lists(**options))
    return command.main(args, standalone_mode=False)


def test_list_options_take_repeats_and_commas_except_paths():
    parsed = _parse(["--seeds", "0,1", "--seeds", "2", "--shot", "3", "--clip", "a,b.mp4", "--clip", "c.mp4"])
    assert parsed.seeds == (0, 1, 2) and parsed.shots == (3,) and parsed.clips == ("a,b.mp4", "c.mp4")
    assert dataclasses.astuple(_parse([])) == ((), (1, 5), ())
    with pytest.raises(ConfigError, match="--seeds 'x': expected an integer"):
        _parse(["--seeds", "1,x"])
    with pytest.raises(ConfigError, match=r"--seeds -1: expected >= 0"):
        _parse(["--seeds", "-1"])
