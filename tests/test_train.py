"""Episodes, train-head, evaluate on small generated caches (CPU)."""
import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from helpers_cache import order_only_cache

from m3net.cache import ProvenanceError
from m3net.cli import main
from m3net.data.episodes import EpisodeError, EpisodeSampler
from m3net.errors import CheckpointError, ConfigError
from m3net.train.checkpoint import load_checkpoint
from m3net.train.evaluate import EvalConfig, evaluate
from m3net.train.train_head import TrainConfig, train_head

pytestmark = pytest.mark.usefixtures("aligned_head")


def _config(cache, out, **overrides):
    base = dict(cache=cache, out=str(out), head="test-aligned", way=3, shot=1, queries=2, episodes=40, lr=0.05,
                lr_step=1000, val_every=20, val_episodes=10, checkpoint_every=10, log_every=10, device="cpu")
    return TrainConfig(**{**base, **overrides})


def test_episodes_are_a_function_of_seed_and_index():
    labels = np.repeat(np.arange(6), 4)
    split = np.array(["train"] * 24)
    a = EpisodeSampler(labels, split, "train", 5, 1, 2, seed=1)
    b = EpisodeSampler(labels, split, "train", 5, 1, 2, seed=1)
    e1, e2 = a.episode(3), b.episode(3)
    assert np.array_equal(e1.support_rows, e2.support_rows) and np.array_equal(e1.query_rows, e2.query_rows)
    assert not np.array_equal(a.episode(4).query_rows, e1.query_rows)
    assert set(e1.support_rows).isdisjoint(e1.query_rows)
    assert (labels[e1.support_rows] == e1.classes[e1.support_labels]).all()
    assert (labels[e1.query_rows] == e1.classes[e1.query_labels]).all()


def test_episode_errors_name_the_problem():
    labels = np.array([0, 0, 0, 1, 1, 1, 2])
    split = np.array(["test"] * 7)
    with pytest.raises(EpisodeError, match="fewer than --way 5"):
        EpisodeSampler(labels, split, "test", 5, 1, 1)
    with pytest.raises(EpisodeError, match=r"cls2 \(1 clips\)"):
        EpisodeSampler(labels, split, "test", 3, 1, 1, class_names=["cls0", "cls1", "cls2"])


def test_training_learns_and_resume_is_exact(cache, tmp_path):
    full = train_head(_config(cache, tmp_path / "full"), progress=False)
    first = train_head(_config(cache, tmp_path / "split", episodes=20), progress=False)
    resumed = train_head(_config(cache, tmp_path / "split", resume=True), progress=False)
    assert first["episodes"] == 20 and resumed["episodes"] == full["episodes"] == 40
    a = load_checkpoint(full["last"])["model"]
    b = load_checkpoint(resumed["last"])["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    logged = np.genfromtxt(tmp_path / "full" / "train_log.csv", delimiter=",", names=True, dtype=None, encoding=None)
    assert logged["loss"][-1] < logged["loss"][0]  # it learns
    state = load_checkpoint(full["best"])
    assert state["head"] == "test-aligned" and state["provenance"]["dataset"] == "order-only"
    assert state["train_config"]["cache"] == cache


def test_run_folder_is_not_overwritten_and_resume_checks_settings(cache, tmp_path):
    train_head(_config(cache, tmp_path / "run", episodes=10), progress=False)
    with pytest.raises(ConfigError, match="--resume"):
        train_head(_config(cache, tmp_path / "run", episodes=10), progress=False)
    with pytest.raises(ConfigError, match="shot=1"):
        train_head(_config(cache, tmp_path / "run", shot=2, resume=True), progress=False)
    other = order_only_cache(tmp_path / "other.h5", frames=3, classes=(3, 2, 1))
    with pytest.raises(CheckpointError, match=r"16-channel features \(4 frames, 7x7 maps\); --cache .*other\.h5: "
                                              r"16-channel features \(3 frames, 7x7 maps\)"):
        train_head(_config(str(other), tmp_path / "run", resume=True), progress=False)
    renamed = order_only_cache(tmp_path / "renamed.h5")
    with h5py.File(renamed, "r+") as f:
        f.attrs["dataset"] = "renamed"
    with pytest.raises(ProvenanceError, match="dataset: 'renamed' vs 'order-only'"):
        train_head(_config(str(renamed), tmp_path / "run", resume=True), progress=False)


def test_parameter_free_head_cannot_be_trained(cache, tmp_path):
    with pytest.raises(ConfigError, match="no parameters"):
        train_head(_config(cache, tmp_path / "p", head="protonet"), progress=False)


def test_evaluate_is_repeatable_and_temporal_beats_protonet(cache, tmp_path):
    run = train_head(_config(cache, tmp_path / "run", episodes=60), progress=False)
    config = EvalConfig(checkpoints=(run["best"],), heads=("protonet",), way=3, shot=1, episodes=200, device="cpu")
    first, second = evaluate(config, progress=False), evaluate(config, progress=False)
    assert first["results"] == second["results"]
    acc = {(r["head"], r["view"]): r for r in first["results"]}
    trained = acc[("test-aligned (run)", "y")]
    proto = acc[("protonet", "y")]
    # Order-only classes: ProtoNet is near chance (33%), the order-aware head far above it.
    assert trained["accuracy"] - trained["ci95"] > proto["accuracy"] + proto["ci95"]
    (paired,) = first["paired"]
    assert paired["head"] == "protonet" and paired["difference"] < 0


def test_cli_train_and_evaluate(cache, tmp_path):
    runner = CliRunner()
    out = tmp_path / "cli"
    result = runner.invoke(main, ["train-head", "--cache", cache, "--out", str(out), "--head", "test-aligned",
                                  "--head-opt", "hidden=4", "--way", "3", "--episodes", "10", "--val-every", "5",
                                  "--val-episodes", "3", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert load_checkpoint(out / "last.pt")["head_config"]["hidden"] == 4
    result = runner.invoke(main, ["evaluate", "--checkpoint", str(out / "best.pt"), "--head", "protonet",
                                  "--way", "3", "--episodes", "20", "--out", str(tmp_path / "eval")])
    assert result.exit_code == 0, result.output
    assert "protonet" in result.output and (tmp_path / "eval" / "results.json").exists()
    bad = runner.invoke(main, ["evaluate", "--head", "protonet", "--cache", str(tmp_path / "nope.h5")])
    assert bad.exit_code != 0 and "no such cache" in bad.output
    too_wide = runner.invoke(main, ["evaluate", "--head", "protonet", "--cache", cache,
                                    "--way", "9", "--episodes", "2"])
    assert too_wide.exit_code != 0 and "fewer than --way 9" in too_wide.output
    unknown = runner.invoke(main, ["train-head", "--cache", cache, "--out", str(tmp_path / "u"), "--head", "nope"])
    assert unknown.exit_code != 0 and "unknown head" in unknown.output


@pytest.mark.slow
def test_m3net_and_otam_beat_protonet_on_order_only_classes(cache, tmp_path):
    run = train_head(_config(cache, tmp_path / "m3net", head="m3net", head_options={"patch_grid": 2}, episodes=30,
                             lr=0.01, val_every=30), progress=False)
    summary = evaluate(EvalConfig(checkpoints=(run["best"],), heads=("otam", "protonet"), way=3, shot=1,
                                  episodes=150, device="cpu"), progress=False)
    acc = {(r["head"], r["view"]): r for r in summary["results"]}
    proto = acc[("protonet", "y")]
    for temporal in (acc[("m3net (m3net)", "y")], acc[("otam", "y")]):
        assert temporal["accuracy"] - temporal["ci95"] > proto["accuracy"] + proto["ci95"]


def test_tensorboard_gets_loss_and_validation(cache, tmp_path):
    pytest.importorskip("tensorboard")  # an optional extra, installed with [test]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train_head(_config(cache, tmp_path, episodes=20), progress=False)
    events = EventAccumulator(str(tmp_path / "tensorboard")).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/episodes_per_s", "val/acc"} <= tags
    assert [e.step for e in events.Scalars("val/acc")] == [20]


def test_adam_and_gradient_clipping(cache, tmp_path, monkeypatch):
    """--optimizer adam builds Adam (its state resumes exactly); --clip-grad bounds every step's gradient norm."""
    full = train_head(_config(cache, tmp_path / "full", optimizer="adam", lr=0.01, episodes=20), progress=False)
    train_head(_config(cache, tmp_path / "split", optimizer="adam", lr=0.01, episodes=10), progress=False)
    resumed = train_head(_config(cache, tmp_path / "split", optimizer="adam", lr=0.01, episodes=20, resume=True),
                         progress=False)
    saved = load_checkpoint(full["last"])
    assert "exp_avg_sq" in next(iter(saved["optimizer"]["state"].values()))  # Adam's second moment
    a, b = saved["model"], load_checkpoint(resumed["last"])["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ConfigError, match="optimizer='adam'"):
        train_head(_config(cache, tmp_path / "split", episodes=30, resume=True), progress=False)

    norms = []
    step = torch.optim.SGD.step

    def recording_step(self, *args, **kwargs):
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        norms.append(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item())
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", recording_step)
    train_head(_config(cache, tmp_path / "clipped", clip_grad=1e-3, episodes=5), progress=False)
    assert len(norms) == 5 and max(norms) <= 1e-3 * (1 + 1e-4)
    norms.clear()
    train_head(_config(cache, tmp_path / "free", episodes=5), progress=False)
    assert max(norms) > 1e-3  # without clipping the same episodes have larger gradients


@pytest.mark.parametrize("option, value", [("optimizer", "rmsprop"), ("clip_grad", -1.0), ("clip_grad", float("nan"))])
def test_bad_optimizer_options_are_config_errors(cache, tmp_path, option, value):
    with pytest.raises(ConfigError, match="--" + option.replace("_", "-")):
        _config(cache, tmp_path / "bad", **{option: value})
