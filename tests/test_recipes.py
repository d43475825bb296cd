"""Reference recipes: --preset reference per head, gradient accumulation in train-head, early stopping by
--patience, and how the demo trains each head with them."""
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from m3net.cli import main
from m3net.data.episodes import EpisodeSampler
from m3net.demo import DemoConfig, head_spec, head_train_config, parse_compare
from m3net.errors import ConfigError
from m3net.model import build_head
from m3net.train.checkpoint import load_checkpoint
from m3net.train.features import open_bank
from m3net.train.presets import RECIPES, preset_values, with_preset
from m3net.train.train_head import TrainConfig, train_head

pytestmark = pytest.mark.usefixtures("aligned_head")


def _config(cache, out, **overrides):
    base = dict(cache=cache, out=str(out), head="test-aligned", way=3, shot=1, queries=2, episodes=8, lr=0.05,
                momentum=0.0, weight_decay=0.0, val_every=4, val_episodes=3, checkpoint_every=4, log_every=4,
                device="cpu")
    return TrainConfig(**{**base, **overrides})


def test_accumulated_step_is_the_mean_of_the_episodes_gradients(cache, tmp_path):
    """Oracle: one plain SGD step on the mean gradient of episodes 0..3 at the initial parameters."""
    config = _config(cache, tmp_path / "acc", episodes=4, accumulate=4, val_episodes=0, lr=0.5)
    trained = load_checkpoint(train_head(config, progress=False)["last"])["model"]
    meta, bank, _ = open_bank(cache, ("train", "val"), torch.device("cpu"), "device")
    torch.manual_seed(config.seed)
    head = build_head("test-aligned", feature_dim=meta.feature_shape[-1], num_frames=meta.feature_shape[-4])
    initial = {k: v.clone() for k, v in head.state_dict().items()}
    sampler = EpisodeSampler(meta.labels, meta.split, "train", 3, 1, 2, seed=config.seed, class_names=meta.classes)
    for index in range(4):
        support, labels, query, query_labels = bank.episode(sampler.episode(index), rng=sampler.view_rng(index))
        (head.loss(head(support, labels, query), query_labels) / 4).backward()
    for name, param in head.named_parameters():
        assert torch.allclose(trained[name], initial[name] - 0.5 * param.grad, atol=1e-6), name
    assert not torch.allclose(trained["proj.weight"], initial["proj.weight"])


def test_validations_wait_for_the_optimizer_step_and_patience_stops_early(cache, tmp_path):
    run = train_head(_config(cache, tmp_path / "wait", episodes=12, accumulate=4, val_every=6, checkpoint_every=6),
                     progress=False)
    logged = np.genfromtxt(tmp_path / "wait" / "val_log.csv", delimiter=",", names=True)
    assert logged["episodes"].tolist() == [8.0, 12.0]  # due at 6 and 12, run after whole steps only
    assert run["episodes"] == 12 and not run["stopped_early"]
    stopped = train_head(_config(cache, tmp_path / "stop", lr=0.0, episodes=40, patience=2), progress=False)
    # the first validation is the best; 2 more do not beat it
    assert stopped["episodes"] == 12 and stopped["stopped_early"]
    state = load_checkpoint(stopped["last"])
    assert state["stale_validations"] == 2 and load_checkpoint(stopped["best"])["episodes"] == 4
    again = train_head(_config(cache, tmp_path / "stop", lr=0.0, episodes=40, patience=2, resume=True), progress=False)
    assert again["episodes"] == 12  # an exhausted run stays stopped


def test_reference_preset_sets_each_heads_recipe_and_given_options_win():
    trx = preset_values("train-head", "reference", "trx")
    assert trx == {"optimizer": "sgd", "lr": 1e-3, "momentum": 0.0, "weight_decay": 0.0, "accumulate": 16,
                   "queries": 5, "lr_step": 1_000_000, "lr_gamma": 0.1, "head_options": {"loss_reduction": "sum"}}
    hyrsm = preset_values("train-head", "reference", "hyrsm")
    assert (hyrsm["optimizer"], hyrsm["weight_decay"], hyrsm["lr_step"], hyrsm["head_options"]) == ("adam", 1e-3,
                                                                                                    36_000, {})
    pal = preset_values("train-head", "reference", "pal")
    assert (pal["lr"], pal["lr_step"], pal["accumulate"], pal["head_options"]) == (1e-4, 3_000, 1, {"temperature": 1.0})
    assert preset_values("train-head", "reference", "m3net")["lr"] == preset_values("train-head", "paper")["lr"]
    options = with_preset("train-head", {"head": "strm", "preset": "reference", "lr": 5e-4,
                                         "head_options": {"patch_weight": 0.5}}, explicit={"lr"})
    assert options["lr"] == 5e-4 and options["queries"] == 4 and options["accumulate"] == 16
    assert options["head_options"] == {"loss_reduction": "sum", "patch_weight": 0.5}  # the recipe's and the given
    given = with_preset("train-head", {"head": "trx", "preset": "reference",
                                       "head_options": {"loss_reduction": "mean"}})
    assert given["head_options"] == {"loss_reduction": "mean"}  # a head option given wins over the recipe's
    with pytest.raises(ConfigError, match="no reference recipe for --head otam"):
        preset_values("train-head", "reference", "otam")
    with pytest.raises(ConfigError, match="train-head settings"):
        preset_values("finetune", "reference", "trx")
    assert {r.head for r in RECIPES} == {"m3net", "trx", "strm", "hyrsm", "pal"}


def test_cli_reference_preset(cache, tmp_path):
    out = tmp_path / "ref"
    result = CliRunner().invoke(main, ["train-head", "--cache", cache, "--out", str(out), "--head", "pal",
                                       "--preset", "reference", "--episodes", "2", "--val-episodes", "0",
                                       "--queries", "1", "--way", "3"])
    assert result.exit_code == 0, result.output
    state = load_checkpoint(str(out / "last.pt"))
    saved = state["train_config"]
    assert (saved["preset"], saved["lr"], saved["momentum"], saved["queries"]) == ("reference", 1e-4, 0.0, 1)
    assert saved["head_options"] == {"temperature": 1.0} and state["head_config"]["temperature"] == 1.0


@pytest.mark.parametrize("head", ["trx", "strm"])
def test_cli_reference_preset_sums_the_loss_of_trx_and_strm_unless_given(cache, tmp_path, head):
    common = ["train-head", "--cache", cache, "--head", head, "--preset", "reference", "--episodes", "1",
              "--val-episodes", "0", "--queries", "1", "--way", "3", "--head-opt", "attention_dim=8"]
    for given, expected in (([], "sum"), (["--head-opt", "loss_reduction=mean"], "mean")):
        out = tmp_path / f"{head}-{expected}"
        result = CliRunner().invoke(main, [*common, *given, "--out", str(out)])
        assert result.exit_code == 0, result.output
        state = load_checkpoint(str(out / "last.pt"))
        assert state["train_config"]["head_options"]["loss_reduction"] == expected
        assert state["head_config"]["loss_reduction"] == expected


def test_demo_trains_every_head_with_the_same_input_and_its_own_recipe(tmp_path):
    config = DemoConfig(out=str(tmp_path), preset="reference", patience=3, train_episodes=500, val_every=100)
    assert config.head_options == {"proj_dim": 128}  # the paper's head at the CPU's width
    trx = head_train_config(config, "c.h5", "trx", {}, "run")
    assert (trx.lr, trx.momentum, trx.accumulate, trx.queries, trx.clip_grad) == (1e-3, 0.0, 16, 5, 0.0)
    assert trx.head_options == {"loss_reduction": "sum"}
    assert (trx.input_norm, trx.patience, trx.episodes, trx.val_every) == ("standardize", 3, 500, 112)
    m3net = head_train_config(config, "c.h5", "m3net", config.head_options, "run")
    assert (m3net.lr, m3net.lr_step, m3net.input_norm) == (1e-4, 2_000, "standardize")
    default = DemoConfig(out=str(tmp_path))
    assert default.input_norm == "standardize" and "input_norm" not in default.head_options
    assert head_train_config(default, "c.h5", "trx", {}, "run").lr == default.lr  # the demo's own protocol
    with pytest.raises(ConfigError, match="the demo takes none"):
        DemoConfig(out=str(tmp_path), preset="paper")


def test_compare_specs_name_variants_and_refuse_bad_ones():
    assert parse_compare(("trx", " m3net:proj_dim=0")) == ("trx", "m3net:proj_dim=0")
    assert head_spec("m3net:proj_dim=0:use_tm=off") == ("m3net", {"proj_dim": 0, "use_tm": False},
                                                        "m3net-proj_dim-0-use_tm-False")
    with pytest.raises(ConfigError, match="trains M3Net already"):
        parse_compare(("m3net",))
    with pytest.raises(ConfigError, match="proj_dim=-1"):
        parse_compare(("m3net:proj_dim=-1",))
    with pytest.raises(ConfigError, match="named twice"):
        parse_compare(("trx", "trx"))
