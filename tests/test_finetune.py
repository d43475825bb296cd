"""m3net finetune on a tiny generated benchmark (random weights, 2 frames, 32x32 crops, CPU)."""
import csv
import dataclasses
import os
import shutil
import warnings

import pytest
import torch
from click.testing import CliRunner

from m3net.cli import main
from m3net.errors import ConfigError, DatasetError
from m3net.extract.backbone import build_backbone
from m3net.model import build_head
from m3net.train.checkpoint import load_checkpoint
from m3net.train.finetune import FinetuneConfig, finetune
from m3net.train.loop import Interrupted


def tiny(root, out, **changes):
    base = FinetuneConfig(dataset="synthetic", root=root, out=str(out), weights="random", head="m3net",
                          head_options={"proj_dim": 8}, way=2, shot=1, queries=1, frames=2, crop=32,
                          episodes=2, lr=0.1, backbone_lr=0.1, freeze_bn=False, checkpoint_every=1, log_every=1,
                          val_episodes=1, workers=0)
    return dataclasses.replace(base, **changes)


def run(config):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the random-weights warning
        return finetune(config, progress=False)


@pytest.mark.slow
def test_updates_backbone_and_head(bench, tmp_path):
    config = tiny(bench, tmp_path)
    run(config)
    state = load_checkpoint(os.path.join(tmp_path, "last.pt"))
    assert state["episodes"] == state["optimizer_steps"] == 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        initial_backbone = build_backbone("random", seed=config.seed)[0].state_dict()
    torch.manual_seed(config.seed)
    initial_head = build_head("m3net", feature_dim=2048, num_frames=2, proj_dim=8).state_dict()
    assert any(not torch.equal(initial_backbone[k], v) for k, v in state["backbone"].items() if v.is_floating_point())
    assert not torch.equal(initial_backbone["conv1.weight"], state["backbone"]["conv1.weight"])
    assert any(not torch.equal(initial_head[k], v) for k, v in state["model"].items())
    with open(os.path.join(tmp_path, "train_log.csv")) as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["episodes"]) for r in rows] == [int(r["optimizer_steps"]) for r in rows] == [1, 2]
    assert all(float(r["loss"]) > 0 for r in rows)


@pytest.mark.slow
def test_frozen_stages_keep_their_weights(bench, tmp_path):
    run(tiny(bench, tmp_path, episodes=1, freeze_stages=2, freeze_bn=True))
    state = load_checkpoint(os.path.join(tmp_path, "last.pt"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        initial = build_backbone("random", seed=0)[0].state_dict()
    assert torch.equal(initial["layer1.0.conv1.weight"], state["backbone"]["layer1.0.conv1.weight"])
    assert torch.equal(initial["layer3.0.bn1.running_mean"], state["backbone"]["layer3.0.bn1.running_mean"])
    assert not torch.equal(initial["layer2.0.conv1.weight"], state["backbone"]["layer2.0.conv1.weight"])


@pytest.mark.slow
def test_resume_is_exact(bench, tmp_path):
    run(tiny(bench, tmp_path / "whole", episodes=2))
    run(tiny(bench, tmp_path / "split", episodes=1))
    run(tiny(bench, tmp_path / "split", episodes=2, resume=True))
    whole = load_checkpoint(str(tmp_path / "whole" / "last.pt"))
    split = load_checkpoint(str(tmp_path / "split" / "last.pt"))
    for part in ("model", "backbone"):
        for key, value in whole[part].items():
            assert torch.equal(value, split[part][key]), (part, key)


@pytest.mark.slow
def test_checkpointing_and_accumulation(bench, tmp_path):
    # BN frozen: with BN in train mode the recomputed forward would update running stats twice.
    run(tiny(bench, tmp_path / "plain", episodes=1, freeze_bn=True))
    run(tiny(bench, tmp_path / "ckpt", episodes=1, freeze_bn=True, checkpointing=True))
    plain = load_checkpoint(str(tmp_path / "plain" / "last.pt"))
    ckpt = load_checkpoint(str(tmp_path / "ckpt" / "last.pt"))
    for key, value in plain["backbone"].items():
        assert torch.allclose(value, ckpt["backbone"][key], atol=1e-6), key
    run(tiny(bench, tmp_path / "acc", episodes=2, accumulate=2, checkpoint_every=2))
    state = load_checkpoint(str(tmp_path / "acc" / "last.pt"))
    assert (state["episodes"], state["optimizer_steps"]) == (2, 1)  # one optimizer step for two episodes
    assert state["scheduler"]["last_epoch"] == 2  # --lr-step counts episodes, also when two make one step
    assert not torch.equal(state["backbone"]["conv1.weight"], plain["backbone"]["conv1.weight"])


@pytest.mark.slow
def test_the_lr_schedule_and_checkpoints_count_episodes_with_accumulation(bench, tmp_path):
    # 2 episodes per optimizer step, lr x0.5 every 3 episodes: the first step (episode 2) keeps the lr, the
    # second (episode 4) halves it once, the third (episode 6) twice; checkpoints every 3 episodes fall on the
    # first step boundary at or after 3 and 6.
    run(tiny(bench, tmp_path, episodes=6, accumulate=2, lr_step=3, log_every=1, checkpoint_every=3,
             val_episodes=0))
    with open(tmp_path / "train_log.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["episodes"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [int(r["optimizer_steps"]) for r in rows] == [0, 1, 1, 2, 2, 3]
    assert [float(r["lr"]) for r in rows] == pytest.approx([0.1, 0.1, 0.1, 0.05, 0.05, 0.025])
    state = load_checkpoint(str(tmp_path / "last.pt"))
    assert (state["episodes"], state["optimizer_steps"], state["scheduler"]["last_epoch"]) == (6, 3, 6)


@pytest.mark.slow
def test_init_head_from_a_head_checkpoint(bench, tmp_path):
    run(tiny(bench, tmp_path / "first", episodes=1))
    first = str(tmp_path / "first" / "last.pt")
    torch.manual_seed(123)
    run(tiny(bench, tmp_path / "second", episodes=1, lr=0.0, backbone_lr=0.0, seed=5, init_head=first))
    loaded = load_checkpoint(str(tmp_path / "second" / "last.pt"))["model"]
    for key, value in load_checkpoint(first)["model"].items():
        assert torch.equal(value, loaded[key]), key
    with pytest.raises(ConfigError, match="init-head"):
        run(tiny(bench, tmp_path / "third", head="otam", head_options={}, init_head=first))


@pytest.mark.slow
def test_unreadable_clip_is_skipped_and_reported(bench, tmp_path):
    root = tmp_path / "bench"
    shutil.copytree(bench, root)
    victim = sorted((root / "train").rglob("*.mp4"))[0]
    victim.write_bytes(os.urandom(2048))
    run(tiny(str(root), tmp_path / "out", episodes=4, workers=2))  # decoded in worker processes, reported here
    with open(tmp_path / "out" / "failures.csv") as fh:
        failures = list(csv.DictReader(fh))
    assert failures and all(f["path"] == str(victim) for f in failures)
    assert load_checkpoint(str(tmp_path / "out" / "last.pt"))["episodes"] == 4


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:--weights random")
def test_cli_and_extract_reads_the_finetuned_backbone(bench, tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["finetune", "--dataset", "synthetic", "--root", bench, "--out", str(out),
                                       "--weights", "random", "--head", "protonet", "--way", "2", "--shot", "1",
                                       "--queries", "1", "--frames", "2", "--crop", "32", "--episodes", "1",
                                       "--backbone-lr", "0.1", "--train-bn", "--val-episodes", "0"])
    assert result.exit_code == 0, result.output
    checkpoint = out / "last.pt"
    state = load_checkpoint(str(checkpoint))
    model, provenance = build_backbone(str(checkpoint))
    for key, value in model.state_dict().items():
        assert torch.equal(value, state["backbone"][key]), key
    assert provenance["weights"] == os.path.abspath(checkpoint)
    # OUT/config.json replays the run: the same backbone and head, bit for bit
    replay = CliRunner().invoke(main, ["finetune", "--config", str(out / "config.json"), "--out", str(tmp_path / "b")])
    assert replay.exit_code == 0, replay.output
    replayed = load_checkpoint(str(tmp_path / "b" / "last.pt"))
    for part in ("backbone", "model"):
        for key, value in state[part].items():
            assert torch.equal(value, replayed[part][key]), (part, key)


# One rank of a torchrun finetune that also saves its own model (only rank 0 writes checkpoints).
RANK_SCRIPT = """
import os, warnings, torch
warnings.simplefilter("ignore")
torch.set_num_threads(1)
import m3net.train.finetune as module
from tests.test_finetune import tiny
built = []
build = module.build_training
module.build_training = lambda *args: built.append(build(*args)) or built[-1]
result = module.finetune(tiny({root!r}, {out!r}, **{changes!r}), progress=False)
torch.save({{"model": built[0].model.state_dict(), "result": result}}, {out!r} + "-rank" + os.environ["RANK"] + ".pt")
"""


def _torchrun(tmp_path, root, out, **changes):
    """`torchrun --nproc-per-node 2` of a tiny finetune into ``out``; each rank also saves OUT-rank<r>.pt."""
    import subprocess
    import sys

    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT.format(root=root, out=out, changes=changes))
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": repo + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           str(script)], env=env, capture_output=True, text=True, timeout=600)


def _rank_states(out):
    return [torch.load(f"{out}-rank{r}.pt", weights_only=True) for r in range(2)]


@pytest.mark.slow
def test_torchrun_two_gloo_ranks_match_one_process_accumulating(bench, tmp_path):
    done = _torchrun(tmp_path, bench, str(tmp_path / "ddp"), episodes=2, freeze_bn=True, device="cpu", val_episodes=3)
    assert done.returncode == 0, done.stderr[-3000:]
    run(tiny(bench, tmp_path / "single", episodes=2, accumulate=2, checkpoint_every=2, freeze_bn=True, device="cpu",
             val_episodes=3))
    ddp = load_checkpoint(str(tmp_path / "ddp" / "last.pt"))
    single = load_checkpoint(str(tmp_path / "single" / "last.pt"))
    for part in ("model", "backbone"):
        for key, value in single[part].items():
            assert torch.allclose(value, ddp[part][key], atol=1e-5), (part, key)
    # Validation shared out over the ranks (episodes 0, 2 on rank 0, 1 on rank 1) pools to the one-process score.
    logs = {}
    for name in ("ddp", "single"):
        with open(tmp_path / name / "val_log.csv") as fh:
            logs[name] = [(float(r["val_acc"]), float(r["val_ci"])) for r in csv.DictReader(fh)]
    assert len(logs["ddp"]) == len(logs["single"]) == 1
    assert logs["ddp"][0] == pytest.approx(logs["single"][0])


@pytest.mark.slow
@pytest.mark.parametrize("accumulate, steps", [(1, 4), (2, 2)])
def test_torchrun_episodes_count_over_all_ranks_and_ranks_stay_equal(bench, tmp_path, accumulate, steps):
    # --episodes 8 on 2 ranks: 8 episodes in 4 optimizer steps (2 with --accumulate 2); temperatures set from
    # data on each rank's first episode are rank 0's on both, so the ranks' parameters stay equal. (BN frozen:
    # in training mode each rank's running statistics follow its own last batch; a small lr: the random trunk
    # with frozen BN diverges at tiny()'s 0.1.)
    out = str(tmp_path / "ddp")
    done = _torchrun(tmp_path, bench, out, episodes=8, accumulate=accumulate, freeze_bn=True, device="cpu",
                     lr=1e-4, backbone_lr=1e-4, val_episodes=2, val_every=4, checkpoint_every=4, log_every=2,
                     head_options={"proj_dim": 8, "temperature_init": "data"})
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = _rank_states(out)
    state = load_checkpoint(os.path.join(out, "last.pt"))
    assert (state["episodes"], state["optimizer_steps"]) == (8, steps)
    assert [(r["result"]["episodes"], r["result"]["optimizer_steps"]) for r in ranks] == [(8, steps)] * 2
    for key, value in ranks[0]["model"].items():
        assert torch.equal(value, ranks[1]["model"][key]), key
    for key, value in state["model"].items():
        assert torch.equal(value, ranks[0]["model"][f"head.{key}"]), key
    assert not torch.allclose(state["model"]["log_temperature"], torch.tensor(10.0).log())  # set from data
    with open(os.path.join(out, "train_log.csv")) as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["episodes"]) for r in rows] == [2, 4, 6, 8]
    assert [int(r["optimizer_steps"]) for r in rows] == ([1, 2, 3, 4] if accumulate == 1 else [0, 1, 1, 2])
    with open(os.path.join(out, "val_log.csv")) as fh:
        assert [int(r["episodes"]) for r in csv.DictReader(fh)] == [4, 8]


@pytest.mark.slow
def test_torchrun_refuses_episodes_the_ranks_cannot_share(bench, tmp_path):
    out = tmp_path / "odd"
    done = _torchrun(tmp_path, bench, str(out), episodes=3, device="cpu")
    assert done.returncode != 0
    assert "--episodes 3: under torchrun every rank trains one episode per round" in done.stderr
    assert not out.exists()  # refused before the run folder is made


@pytest.mark.slow
def test_validation_keeps_the_best_checkpoint(bench, tmp_path):
    run(tiny(bench, tmp_path, episodes=3, val_every=1, val_episodes=2, val_queries=2))
    with open(tmp_path / "val_log.csv") as fh:
        rows = list(csv.DictReader(fh))
    accs = [float(r["val_acc"]) for r in rows]
    assert [int(r["episodes"]) for r in rows] == [1, 2, 3] and all(0 <= a <= 100 for a in accs)
    best = load_checkpoint(str(tmp_path / "best.pt"))
    assert best["episodes"] == accs.index(max(accs)) + 1 and best["best_val_acc"] == max(accs)
    assert float(rows[-1]["best_val_acc"]) == max(accs)


@pytest.mark.slow
def test_interrupt_saves_a_checkpoint_that_resumes_exactly(bench, tmp_path, monkeypatch):
    run(tiny(bench, tmp_path / "whole", episodes=2, checkpoint_every=100))
    from m3net.train import finetune as module
    forward, calls = module.Finetuner.forward, []

    def interrupted(self, *args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return forward(self, *args)

    monkeypatch.setattr(module.Finetuner, "forward", interrupted)
    with pytest.raises(Interrupted, match="--resume"):
        run(tiny(bench, tmp_path / "split", episodes=2, checkpoint_every=100))
    monkeypatch.setattr(module.Finetuner, "forward", forward)
    assert load_checkpoint(str(tmp_path / "split" / "last.pt"))["episodes"] == 1
    run(tiny(bench, tmp_path / "split", episodes=2, checkpoint_every=100, resume=True))
    whole, split = (load_checkpoint(str(tmp_path / d / "last.pt")) for d in ("whole", "split"))
    for part in ("model", "backbone"):
        for key, value in whole[part].items():
            assert torch.equal(value, split[part][key]), (part, key)


def test_resume_refuses_other_settings(bench, tmp_path):
    run(tiny(bench, tmp_path, episodes=1))
    with pytest.raises(ConfigError, match="backbone_lr"):
        run(tiny(bench, tmp_path, episodes=2, backbone_lr=0.5, resume=True))


@pytest.mark.slow
def test_tensorboard_scalars_are_written(bench, tmp_path):
    pytest.importorskip("tensorboard")  # an optional extra, installed with [test]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run(tiny(bench, tmp_path, episodes=1))
    events = EventAccumulator(str(tmp_path / "tensorboard")).Reload()
    assert {"train/loss", "train/episodes_per_s", "val/acc"} <= set(events.Tags()["scalars"])


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:--weights random")
def test_finetuned_head_scores_the_cache_of_its_own_backbone(bench, tmp_path):
    out = tmp_path / "run"
    common = ["--dataset", "synthetic", "--root", bench]
    result = CliRunner().invoke(main, ["finetune", *common, "--out", str(out), "--weights", "random", "--frames", "2",
                                       "--head-opt", "proj_dim=8", "--way", "2", "--queries", "1", "--crop", "64",
                                       "--episodes", "1", "--workers", "0", "--val-episodes", "1"])
    assert result.exit_code == 0, result.output
    assert "best val accuracy" in result.output
    best = str(out / "best.pt")
    tuned, untuned = str(tmp_path / "tuned.h5"), str(tmp_path / "untuned.h5")
    # extract follows the checkpoint's frames and crop (2, 64); the random-weights cache is told them.
    for weights, cache, size in ((best, tuned, []), ("random", untuned, ["--frames", "2", "--crop", "64"])):
        result = CliRunner().invoke(main, ["extract", *common, "--out", cache, "--weights", weights,
                                           "--workers", "0", "--batch-size", "4", *size])
        assert result.exit_code == 0, result.output
    other_crop = CliRunner().invoke(main, ["extract", *common, "--out", str(tmp_path / "x.h5"), "--weights", best,
                                           "--crop", "224"])
    assert other_crop.exit_code == 2 and "finetuned with --frames 2 --crop 64" in other_crop.output
    scored = CliRunner().invoke(main, ["evaluate", "--checkpoint", best, "--cache", tuned, "--way", "2",
                                       "--episodes", "2", "--device", "cpu"])
    assert scored.exit_code == 0, scored.output
    assert "m3net" in scored.output
    refused = CliRunner().invoke(main, ["evaluate", "--checkpoint", best, "--cache", untuned, "--way", "2",
                                        "--episodes", "2", "--device", "cpu"])
    assert refused.exit_code != 0 and "weights_sha256" in refused.output
    no_cache = CliRunner().invoke(main, ["evaluate", "--checkpoint", best, "--way", "2", "--episodes", "2"])
    assert no_cache.exit_code != 0 and f"m3net extract --weights {best}" in no_cache.output
    support = tmp_path / "support"
    test_root = os.path.join(bench, "test")
    classes = sorted(os.listdir(test_root))
    for name in classes:
        (support / name).mkdir(parents=True)
        first = sorted(os.listdir(os.path.join(test_root, name)))[0]
        shutil.copy(os.path.join(test_root, name, first), support / name / first)
    query = os.path.join(test_root, classes[0], sorted(os.listdir(os.path.join(test_root, classes[0])))[1])
    predicted = CliRunner().invoke(main, ["predict", "--checkpoint", best, "--support", str(support), "--query", query,
                                          "--device", "cpu"])
    assert predicted.exit_code == 0, predicted.output
    assert any(name in predicted.output for name in classes)


@pytest.mark.slow
def test_missing_clips_are_left_out_of_episodes(bench, tmp_path):
    root = tmp_path / "bench"
    shutil.copytree(bench, root)
    gone = sorted((root / "train").rglob("*.mp4"))[0]
    gone.unlink()
    run(tiny(str(root), tmp_path / "out", episodes=3))
    assert not (tmp_path / "out" / "failures.csv").exists()
    empty = tmp_path / "empty"
    shutil.copytree(bench, empty)
    for clip in empty.rglob("*.mp4"):
        clip.unlink()
    with pytest.raises(DatasetError, match="none of the 18 synthetic clips listed for train, val is there"):
        run(tiny(str(empty), tmp_path / "none"))
    assert not (tmp_path / "none").exists()  # refused before the run folder is made


@pytest.mark.slow
@pytest.mark.parametrize("head", ["otam", "protonet", "tsn-cosine"])
@pytest.mark.filterwarnings("ignore:--weights random")
def test_parameter_free_head_finetunes_the_backbone_end_to_end(bench, tmp_path, head):
    # The head has no parameters: only the loss's gradient through it can move the trunk. Weight decay 0
    # and frozen BN (the default), so nothing else changes a weight. 3-way with 2 queries: 2-way 1-query
    # episodes are solved with saturated softmaxes (protonet's loss exactly 0, no gradient at all).
    out = tmp_path / "run"
    common = ["--dataset", "synthetic", "--root", bench]
    result = CliRunner().invoke(main, ["finetune", *common, "--out", str(out), "--weights", "random", "--head", head,
                                       "--way", "3", "--queries", "2", "--frames", "2", "--crop", "32",
                                       "--episodes", "2", "--lr-step", "1", "--weight-decay", "0", "--workers", "0",
                                       "--val-episodes", "1", "--val-every", "2", "--checkpoint-every", "1",
                                       "--log-every", "1"])
    assert result.exit_code == 0, result.output
    with open(out / "train_log.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert all(0 < float(r["loss"]) < float("inf") for r in rows)
    # no head lr (no head group); the backbone's lr (default 1e-5) halves every step (--lr-step 1)
    assert [r["lr"] for r in rows] == ["", ""]
    assert [float(r["backbone_lr"]) for r in rows] == pytest.approx([5e-6, 2.5e-6])
    best = str(out / "best.pt")
    state = load_checkpoint(best)
    assert state["head"] == head and state["model"] == {} and len(state["optimizer"]["param_groups"]) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        initial = build_backbone("random", seed=0)[0].state_dict()
    for key in ("conv1.weight", "layer4.2.conv3.weight"):
        assert not torch.equal(initial[key], state["backbone"][key]), key
    assert torch.equal(initial["bn1.running_mean"], state["backbone"]["bn1.running_mean"])  # BN stayed frozen
    cache = str(tmp_path / "tuned.h5")
    result = CliRunner().invoke(main, ["extract", *common, "--out", cache, "--weights", best, "--workers", "0",
                                       "--batch-size", "4"])
    assert result.exit_code == 0, result.output
    scored = CliRunner().invoke(main, ["evaluate", "--checkpoint", best, "--cache", cache, "--way", "2",
                                       "--episodes", "2", "--device", "cpu"])
    assert scored.exit_code == 0, scored.output
    assert f"{head} (run)" in scored.output


def test_nothing_to_train_is_refused(bench, tmp_path):
    with pytest.raises(ConfigError, match="nothing to train"):
        run(tiny(bench, tmp_path, head="protonet", head_options={}, freeze_stages=5, freeze_bn=True))


@pytest.mark.slow
def test_input_norm_from_a_stats_cache_travels_with_the_checkpoint(bench, tmp_path):
    """finetune --input-norm standardize normalises the backbone's maps with --stats-cache's training statistics
    (a cache of its initial weights); evaluate and predict of the tuned backbone's cache apply the same ones."""
    common = ["--dataset", "synthetic", "--root", bench, "--workers", "0"]
    stats = str(tmp_path / "initial.h5")
    assert CliRunner().invoke(main, ["extract", *common, "--out", stats, "--weights", "random", "--frames", "2",
                                     "--crop", "64", "--batch-size", "4"]).exit_code == 0
    refused = CliRunner().invoke(main, ["finetune", *common, "--out", str(tmp_path / "no"), "--weights", "random",
                                        "--frames", "2", "--crop", "64", "--way", "2", "--queries", "1",
                                        "--input-norm", "standardize", "--stats-cache", stats])
    assert refused.exit_code == 1 and f"m3net cache-stats {stats}" in refused.output  # no statistics yet
    assert CliRunner().invoke(main, ["cache-stats", stats]).exit_code == 0
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["finetune", *common, "--out", str(out), "--weights", "random", "--frames", "2",
                                       "--crop", "64", "--head-opt", "proj_dim=8", "--way", "2", "--queries", "1",
                                       "--episodes", "1", "--val-episodes", "1", "--input-norm", "standardize",
                                       "--stats-cache", stats])
    assert result.exit_code == 0, result.output
    best = str(out / "best.pt")
    state = load_checkpoint(best)
    assert state["input_norm"] == "standardize" and state["input_statistics"]["source"] == os.path.abspath(stats)
    tuned = str(tmp_path / "tuned.h5")
    assert CliRunner().invoke(main, ["extract", *common, "--out", tuned, "--weights", best,
                                     "--batch-size", "4"]).exit_code == 0
    scored = CliRunner().invoke(main, ["evaluate", "--checkpoint", best, "--cache", tuned, "--head", "otam", "--way",
                                       "2", "--episodes", "2", "--device", "cpu"])
    assert scored.exit_code == 0 and "--input-norm standardize for every head" in scored.output, scored.output
    other = CliRunner().invoke(main, ["evaluate", "--checkpoint", best, "--cache", tuned, "--input-norm", "none",
                                      "--way", "2", "--episodes", "2", "--device", "cpu"])
    assert other.exit_code == 2 and "trained with --input-norm standardize" in other.output
