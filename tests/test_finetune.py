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
from m3net.data.synthetic import SyntheticConfig, generate_synthetic
from m3net.extract.backbone import build_backbone
from m3net.model import build_head
from m3net.train.checkpoint import load_checkpoint
from m3net.train.finetune import FinetuneConfig, finetune


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    generate_synthetic(str(root), SyntheticConfig(train_classes=3, val_classes=3, test_classes=3, clips_per_class=3,
                                                  frames=16, size=64, family_size=3), progress=False)
    return str(root)


def tiny(root, out, **changes):
    base = FinetuneConfig("synthetic", root, out=str(out), weights="random", head="m3net",
                          head_options={"proj_dim": 8}, way=2, shot=1, queries=1, frames=2, crop=32,
                          episodes=2, lr=0.1, backbone_lr=0.1, freeze_bn=False, checkpoint_every=1, log_every=1)
    return dataclasses.replace(base, **changes)


def run(config):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the random-weights warning
        return finetune(config, progress=False)


def test_updates_backbone_and_head(bench, tmp_path):
    config = tiny(bench, tmp_path)
    run(config)
    state = load_checkpoint(os.path.join(tmp_path, "last.pt"))
    assert state["step"] == 2
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
    assert [int(r["step"]) for r in rows] == [1, 2] and all(float(r["loss"]) > 0 for r in rows)


def test_frozen_stages_keep_their_weights(bench, tmp_path):
    run(tiny(bench, tmp_path, episodes=1, freeze_stages=2, freeze_bn=True))
    state = load_checkpoint(os.path.join(tmp_path, "last.pt"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        initial = build_backbone("random", seed=0)[0].state_dict()
    assert torch.equal(initial["layer1.0.conv1.weight"], state["backbone"]["layer1.0.conv1.weight"])
    assert torch.equal(initial["layer3.0.bn1.running_mean"], state["backbone"]["layer3.0.bn1.running_mean"])
    assert not torch.equal(initial["layer2.0.conv1.weight"], state["backbone"]["layer2.0.conv1.weight"])


def test_resume_is_exact(bench, tmp_path):
    run(tiny(bench, tmp_path / "whole", episodes=2))
    run(tiny(bench, tmp_path / "split", episodes=1))
    run(tiny(bench, tmp_path / "split", episodes=2, resume=True))
    whole = load_checkpoint(str(tmp_path / "whole" / "last.pt"))
    split = load_checkpoint(str(tmp_path / "split" / "last.pt"))
    for part in ("model", "backbone"):
        for key, value in whole[part].items():
            assert torch.equal(value, split[part][key]), (part, key)


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
    assert state["scheduler"]["last_epoch"] == 1  # one optimizer step for two episodes
    assert not torch.equal(state["backbone"]["conv1.weight"], plain["backbone"]["conv1.weight"])


def test_init_head_from_a_head_checkpoint(bench, tmp_path):
    run(tiny(bench, tmp_path / "first", episodes=1))
    first = str(tmp_path / "first" / "last.pt")
    torch.manual_seed(123)
    run(tiny(bench, tmp_path / "second", episodes=1, lr=0.0, backbone_lr=0.0, seed=5, init_head=first))
    loaded = load_checkpoint(str(tmp_path / "second" / "last.pt"))["model"]
    for key, value in load_checkpoint(first)["model"].items():
        assert torch.equal(value, loaded[key]), key
    with pytest.raises(ValueError, match="init-head"):
        run(tiny(bench, tmp_path / "third", head="otam", head_options={}, init_head=first))


def test_unreadable_clip_is_skipped_and_reported(bench, tmp_path):
    root = tmp_path / "bench"
    shutil.copytree(bench, root)
    victim = sorted((root / "train").rglob("*.mp4"))[0]
    victim.write_bytes(os.urandom(2048))
    run(tiny(str(root), tmp_path / "out", episodes=4))
    with open(tmp_path / "out" / "failures.csv") as fh:
        failures = list(csv.DictReader(fh))
    assert failures and all(f["path"] == str(victim) for f in failures)
    assert load_checkpoint(str(tmp_path / "out" / "last.pt"))["step"] == 4


@pytest.mark.filterwarnings("ignore:--weights random")
def test_cli_and_extract_reads_the_finetuned_backbone(bench, tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["finetune", "--dataset", "synthetic", "--root", bench, "--out", str(out),
                                       "--weights", "random", "--head", "protonet", "--way", "2", "--shot", "1",
                                       "--queries", "1", "--frames", "2", "--crop", "32", "--episodes", "1",
                                       "--backbone-lr", "0.1", "--train-bn"])
    assert result.exit_code == 0, result.output
    checkpoint = out / "last.pt"
    state = load_checkpoint(str(checkpoint))
    model, provenance = build_backbone(str(checkpoint))
    for key, value in model.state_dict().items():
        assert torch.equal(value, state["backbone"][key]), key
    assert provenance["weights"] == os.path.abspath(checkpoint)


def test_torchrun_two_gloo_ranks_match_one_process_accumulating(bench, tmp_path):
    import subprocess
    import sys
    script = tmp_path / "ddp.py"
    script.write_text(
        "import warnings, dataclasses, sys, torch\n"
        "warnings.simplefilter('ignore')\n"
        "torch.set_num_threads(1)\n"
        "from tests.test_finetune import tiny\n"
        "from m3net.train.finetune import finetune\n"
        f"finetune(tiny({bench!r}, {str(tmp_path / 'ddp')!r}, episodes=1, freeze_bn=True, device='cpu'), progress=False)\n")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": repo + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    run(tiny(bench, tmp_path / "single", episodes=2, accumulate=2, checkpoint_every=2, freeze_bn=True, device="cpu"))
    ddp = load_checkpoint(str(tmp_path / "ddp" / "last.pt"))
    single = load_checkpoint(str(tmp_path / "single" / "last.pt"))
    for part in ("model", "backbone"):
        for key, value in single[part].items():
            assert torch.allclose(value, ddp[part][key], atol=1e-5), (part, key)
