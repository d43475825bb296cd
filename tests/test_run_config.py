"""OUT/config.json: every training run writes its resolved settings first, `--config` replays them (options on the
command line still win, a preset does not override them), and --resume checks the file against last.pt."""
import json

import pytest
import torch
from click.testing import CliRunner

from m3net.cli import main
from m3net.train.checkpoint import load_checkpoint

pytestmark = pytest.mark.usefixtures("aligned_head")


def _train(*args):
    result = CliRunner().invoke(main, ["train-head", *args])
    return result


def _run(cache, out, *extra):
    return _train("--cache", cache, "--out", str(out), "--head", "test-aligned", "--head-opt", "hidden=5",
                  "--way", "3", "--queries", "2", "--episodes", "6", "--lr", "0.05", "--val-every", "3",
                  "--val-episodes", "2", "--checkpoint-every", "3", "--device", "cpu", *extra)


def _settings(out):
    with open(out / "config.json") as fh:
        saved = json.load(fh)
    assert saved["command"] == "train-head"
    return saved["settings"]


def test_config_json_replays_a_run_bit_for_bit(cache, tmp_path):
    first = _run(cache, tmp_path / "a")
    assert first.exit_code == 0, first.output
    settings = _settings(tmp_path / "a")
    assert (settings["lr"], settings["episodes"], settings["head_options"]) == (0.05, 6, {"hidden": 5})
    replay = _train("--config", str(tmp_path / "a" / "config.json"), "--out", str(tmp_path / "b"))
    assert replay.exit_code == 0, replay.output
    assert {k: v for k, v in _settings(tmp_path / "b").items() if k != "out"} == \
        {k: v for k, v in settings.items() if k != "out"}
    a, b = (load_checkpoint(str(tmp_path / run / "last.pt")) for run in ("a", "b"))
    assert a["head_config"] == b["head_config"] and a["model"].keys() == b["model"].keys()
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    assert open(tmp_path / "a" / "train_log.csv").read().count("\n") == open(tmp_path / "b" / "train_log.csv").read(
    ).count("\n")
    # an option on the command line wins over the file
    changed = _train("--config", str(tmp_path / "a" / "config.json"), "--out", str(tmp_path / "c"), "--lr", "0.01",
                     "--episodes", "3")
    assert changed.exit_code == 0, changed.output
    assert (_settings(tmp_path / "c")["lr"], _settings(tmp_path / "c")["episodes"]) == (0.01, 3)


def test_a_replayed_preset_run_keeps_the_values_it_ran_with(cache, tmp_path):
    # --preset reference --lr 0.02: the file holds lr 0.02; replaying it must not put the recipe's lr back
    first = _train("--cache", cache, "--out", str(tmp_path / "a"), "--head", "pal", "--preset", "reference",
                   "--lr", "0.02", "--episodes", "1", "--val-episodes", "0", "--queries", "1", "--way", "3")
    assert first.exit_code == 0, first.output
    replay = _train("--config", str(tmp_path / "a" / "config.json"), "--out", str(tmp_path / "b"))
    assert replay.exit_code == 0, replay.output
    replayed = _settings(tmp_path / "b")
    assert (replayed["lr"], replayed["preset"], replayed["head_options"]) == (0.02, "reference", {"temperature": 1.0})


def test_config_of_another_command_or_garbage_is_refused(cache, tmp_path):
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"command": "finetune", "settings": {"lr": 1.0}}))
    result = _train("--config", str(other), "--out", str(tmp_path / "x"))
    assert result.exit_code == 2 and "written by `m3net finetune`, not `m3net train-head`" in result.output
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    result = _train("--config", str(garbage), "--out", str(tmp_path / "x"))
    assert result.exit_code == 2 and "not a readable run config" in result.output
    assert not (tmp_path / "x").exists()


def test_resume_refuses_a_config_json_that_is_not_the_checkpoints_run(cache, tmp_path):
    out = tmp_path / "a"
    assert _run(cache, out).exit_code == 0
    assert _run(cache, out, "--episodes", "9", "--resume").exit_code == 0  # the file agrees: resumed
    assert _settings(out)["episodes"] == 9  # and rewritten with the resumed run's settings
    saved = json.loads((out / "config.json").read_text())
    saved["settings"]["lr"] = 0.5
    (out / "config.json").write_text(json.dumps(saved))
    result = _run(cache, out, "--episodes", "12", "--resume")
    assert result.exit_code == 2 and "config.json is not the run in" in result.output and "lr: 0.5 vs 0.05" in \
        result.output
