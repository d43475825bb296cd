"""Settings and head options: every bad value is refused, naming the option, before any work; presets."""

import pytest
from click.testing import CliRunner

from m3net.cli import main
from m3net.errors import ConfigError
from m3net.model import build_head
from m3net.model.registry import parse_head_options
from m3net.train.checkpoint import load_checkpoint
from m3net.train.evaluate import EvalConfig, evaluate

pytestmark = pytest.mark.usefixtures("aligned_head")


@pytest.mark.parametrize("text,value", [("False", False), ("off", False), ("no", False), ("FALSE", False),
                                        ("0", False), ("on", True), ("Yes", True), ("true", True)])
def test_boolean_head_options_parse_in_any_spelling(text, value):
    assert parse_head_options("m3net", [f"use_tm={text}"]) == {"use_tm": value}


@pytest.mark.parametrize("pair,message", [
    ("use_tm=maybe", "use_tm='maybe': expected a boolean"),
    ("temperature=nan", "temperature='nan': expected a finite number"),
    ("temperature=hot", "expected a number"),
    ("proj_dim=1.5", "proj_dim='1.5': expected an integer"),
    ("no_such=1", "has no option"),
    ("use_tm", "expected KEY=VALUE"),
])
def test_bad_head_options_are_named(pair, message):
    with pytest.raises(ConfigError, match=message):
        parse_head_options("m3net", [pair])


def test_typed_head_options_from_python_and_tuples():
    assert parse_head_options("trx", ["cardinalities=2,3"])["cardinalities"] == (2, 3)
    assert build_head("m3net", feature_dim=8, num_frames=2, use_tm="off").config.use_tm is False
    with pytest.raises(ConfigError, match="use_tm=2: expected bool"):
        build_head("m3net", use_tm=2)
    with pytest.raises(ConfigError, match="finite"):
        build_head("tsn-cosine", temperature=float("inf"))


def test_cli_head_opt_off_switches_the_matcher_off_and_the_checkpoint_stores_a_bool(cache, tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["train-head", "--cache", cache, "--out", str(out), "--head", "m3net",
                                       "--head-opt", "use_tm=off", "--head-opt", "proj_dim=8", "--episodes", "2",
                                       "--way", "3", "--queries", "1", "--val-episodes", "1", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    state = load_checkpoint(str(out / "last.pt"))
    assert state["head_config"]["use_tm"] is False and state["head_config"]["proj_dim"] == 8


@pytest.mark.parametrize("args,message", [
    (["--lr", "nan"], "--lr nan: expected a finite number"),
    (["--lr", "-1"], "--lr -1.0: expected >= 0"),
    (["--lr-step", "0"], "--lr-step 0: expected >= 1"),
    (["--val-every", "0"], "--val-every 0: expected >= 1"),
    (["--checkpoint-every", "0"], "--checkpoint-every 0: expected >= 1"),
    (["--lr", "fast"], "'fast' is not a valid float"),
])
def test_bad_numeric_options_stop_before_any_work(cache, tmp_path, args, message):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["train-head", "--cache", cache, "--out", str(out), *args])
    assert result.exit_code == 2 and message in result.output, result.output
    assert not out.exists()


def test_evaluate_checks_episodes_and_out_before_scoring(cache, tmp_path):
    result = CliRunner().invoke(main, ["evaluate", "--cache", cache, "--head", "protonet", "--episodes", "0"])
    assert result.exit_code == 2 and "--episodes 0: expected >= 1" in result.output
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="--out .*cannot create"):
        evaluate(EvalConfig(cache=cache, heads=("protonet",), episodes=5, out=str(blocker / "results"), device="cpu"))


def test_preset_paper_sets_the_protocol_and_given_options_win(cache, tmp_path):
    from m3net.train.presets import with_preset

    options = with_preset("finetune", {"preset": "paper", "episodes": 3, "backbone_lr": 1e-5}, explicit={"episodes"})
    assert options["episodes"] == 3 and options["backbone_lr"] == 1e-4 and options["queries"] == 5
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["train-head", "--cache", cache, "--out", str(out), "--head", "test-aligned",
                                       "--preset", "paper", "--episodes", "2", "--way", "3", "--val-episodes", "1",
                                       "--queries", "1", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    saved = load_checkpoint(str(out / "last.pt"))["train_config"]
    assert saved["preset"] == "paper" and saved["episodes"] == 2 and saved["queries"] == 1
    assert saved["lr_step"] == 2000 and saved["lr"] == 1e-4


@pytest.mark.parametrize("option,message", [("proj_dim=-1", "proj_dim=-1"), ("patch_grid=0", "patch_grid=0"),
                                            ("cm_dim=-2", "cm_dim=-2"), ("dtw_gamma=0", "dtw_gamma=0.0"),
                                            ("use_im=off", None)])
def test_m3net_head_options_out_of_range_are_config_errors(option, message):
    pairs = [option, "use_cm=off", "use_tm=off"] if message is None else [option]
    with pytest.raises(ConfigError, match=message or "every matcher is switched off"):  # refused when parsed
        build_head("m3net", feature_dim=8, num_frames=2, **parse_head_options("m3net", pairs))
