"""Bad input gives a clear error (or the right result), never a silent wrong one; one writer per
run folder or cache; nothing lost on a crash."""
import csv
import os
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from helpers_cache import order_only_cache

from m3net.cache import CacheError, load_cache
from m3net.cli import main
from m3net.data.datasets import load_dataset
from m3net.errors import CheckpointError, ConfigError, DatasetError, LockError, NonFiniteError
from m3net.model import build_head
from m3net.model.registry import parse_head_options
from m3net.train.checkpoint import load_checkpoint
from m3net.train.evaluate import EvalConfig, evaluate
from m3net.train.train_head import TrainConfig, train_head

pytestmark = pytest.mark.usefixtures("aligned_head")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(order_only_cache(tmp_path_factory.mktemp("cache") / "order.h5"))


def _config(cache, out, **overrides):
    base = dict(cache=cache, out=str(out), head="test-aligned", way=3, shot=1, queries=2, episodes=6, lr=0.05,
                val_every=1000, val_episodes=2, checkpoint_every=3, log_every=1, device="cpu")
    return TrainConfig(**{**base, **overrides})


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


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(cache, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(NonFiniteError, match="training loss is not finite"):
        train_head(_config(cache, out, lr=1e30, episodes=50, checkpoint_every=1), progress=False)
    state = load_checkpoint(str(out / "last.pt"))
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    assert 0 < state["step"] < 50


def _rewrite(path, name, transform):
    with h5py.File(path, "r+", locking=False) as f:
        data = transform(f[name][()])
        del f[name]
        f.create_dataset(name, data=data)


@pytest.mark.parametrize("name,transform,message", [
    ("labels", lambda a: np.concatenate([a, a[:1]]), "/labels has"),
    ("labels", lambda a: np.where(np.arange(len(a)) == 3, 99, a), "/labels range over"),
    ("labels", lambda a: np.where(np.arange(len(a)) == 3, -1, a), "/labels range over"),
    ("done", lambda a: a[:-1], "/done has"),
    ("features", lambda a: a[:, :2], "T=2 frames per clip, num_frames says 4"),
    ("features", lambda a: a[..., 0], "expected rank 5"),
    ("features", lambda a: np.where(np.arange(len(a))[:, None, None, None, None] == 5, np.nan, a).astype(a.dtype),
     "row 5 hold NaN or inf"),
])
def test_inconsistent_caches_are_refused_naming_what_is_wrong(tmp_path, name, transform, message):
    path = str(order_only_cache(tmp_path / "c.h5"))
    _rewrite(path, name, transform)
    with pytest.raises(CacheError, match=message):
        load_cache(path)


def test_a_class_named_like_a_split_beside_other_classes_is_an_error(tmp_path):
    for folder in ("test", "dive", "vault"):
        (tmp_path / folder / "clip_0").mkdir(parents=True)
        (tmp_path / folder / "clip_0" / "img_00001.jpg").write_bytes(b"")
    with pytest.raises(DatasetError, match=r"mixes split folders \(test\) with class folders \(dive, vault\)"):
        load_dataset("folder", str(tmp_path))


def _hold_lock(lock_path):
    """A second process holding m3net's write lock on ``lock_path`` until killed."""
    code = ("import sys, time\nfrom m3net.locking import exclusive_lock\n"
            "with exclusive_lock(sys.argv[1], 'x'):\n    print('locked', flush=True)\n    time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, lock_path], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_run_folder_has_one_writer_and_a_dead_writer_leaves_no_stale_lock(cache, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    holder = _hold_lock(str(out / ".lock"))
    try:
        with pytest.raises(LockError, match=rf"another m3net process \(pid {holder.pid}\) is writing the run folder"):
            train_head(_config(cache, out), progress=False)
    finally:
        holder.kill()
        holder.wait()
    train_head(_config(cache, out), progress=False)  # the killed holder's lock died with it
    result = CliRunner().invoke(main, ["train-head", "--cache", cache, "--out", str(out), "--head", "test-aligned"])
    assert result.exit_code == 2 and "already holds a run" in result.output and "--resume" in result.output


def test_readers_are_told_when_a_cache_is_being_written(cache, tmp_path):
    holder = _hold_lock(cache + ".lock")
    try:
        with pytest.raises(LockError, match="another m3net process .* is writing"):
            load_cache(cache)
        result = CliRunner().invoke(main, ["cache-info", cache])
        assert result.exit_code == 75 and "wait for it to finish or stop it" in result.output
        assert "delete" not in result.output and "remove" not in result.output
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.1)
    load_cache(cache)


def _steps(path):
    with open(path, newline="") as fh:
        return [int(row["step"]) for row in csv.DictReader(fh)]


def test_resume_after_a_crash_logs_every_step_once(cache, tmp_path):
    out = tmp_path / "run"
    train_head(_config(cache, out, episodes=6, checkpoint_every=3), progress=False)
    # A crash after the checkpoint at step 6 had logged steps 7 and 8 already.
    with open(out / "train_log.csv", "a", newline="") as fh:
        fh.write("7,1.0,,1.0,0,0.05\n8,1.0,,1.0,0,0.05\n")
    train_head(_config(cache, out, episodes=9, resume=True), progress=False)
    assert _steps(out / "train_log.csv") == list(range(1, 10))
    assert os.path.exists(out / "last.pt") and load_checkpoint(str(out / "last.pt"))["step"] == 9


def test_a_full_disk_stops_extraction_cleanly_and_the_cache_resumes(tmp_path, monkeypatch):
    import shutil as real_shutil

    from m3net.cache import CacheWriter, cache_info

    path = str(tmp_path / "c.h5")
    features = np.zeros((4, 2, 7, 7, 8), np.float16)
    attrs = {"dataset": "x", "backbone": "none", "weights": "none", "weights_sha256": "", "num_frames": 2,
             "sampling": "tsn-centre", "resize": [8, 8], "crop": 7, "mean": [0, 0, 0], "std": [1, 1, 1],
             "dtype": "float16", "views": 0, "code_version": "test"}
    args = (path, ["a", "b", "c", "d"], [0, 0, 1, 1], ["p", "q"], ["train"] * 4, attrs)
    written = []
    usage = real_shutil.disk_usage

    def shrinking_disk(folder):  # room for two rows, then full
        total, used, free = usage(folder)
        return type(usage(folder))(total, used, 10**9 if len(written) < 2 else 1000)

    monkeypatch.setattr("m3net.cache.writer.shutil.disk_usage", shrinking_disk)
    with pytest.raises(CacheError, match="MiB free.*re-run the same command to resume"):
        with CacheWriter(*args, feature_shape=(7, 7, 8)) as writer:
            for row in writer.pending():
                writer.write(row, features[row])
                written.append(row)
    assert cache_info(path)["done"] == 2
    monkeypatch.setattr("m3net.cache.writer.shutil.disk_usage", usage)
    with CacheWriter(*args, feature_shape=(7, 7, 8)) as writer:
        assert writer.pending() == [2, 3]


@pytest.mark.parametrize("content", [b"not a torch file at all", None])
def test_garbage_weights_and_checkpoints_are_named_errors_without_unpickling_advice(cache, tmp_path, content):
    path = tmp_path / "w.pt"
    if content is None:
        torch.save({"layer": torch.nn.Linear(2, 2)}, path)  # a pickled module, not tensors
    else:
        path.write_bytes(content)
    for args in (["extract", "--dataset", "folder", "--root", str(tmp_path), "--out", str(tmp_path / "c.h5"),
                  "--weights", str(path)],
                 ["evaluate", "--checkpoint", str(path), "--cache", cache]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 1 and str(path) in result.output, result.output
        assert "Traceback" not in result.output and "weights_only=False" not in result.output


def test_checkpoints_missing_keys_or_with_other_shapes_are_refused(cache, tmp_path):
    from m3net.train.evaluate import load_trained_head

    out = tmp_path / "run"
    train_head(_config(cache, out), progress=False)
    state = load_checkpoint(str(out / "last.pt"))
    broken = tmp_path / "broken.pt"
    torch.save({k: v for k, v in state.items() if k != "head_config"}, broken)
    with pytest.raises(CheckpointError, match="incomplete m3net checkpoint \\(missing head_config\\)"):
        load_checkpoint(str(broken))
    state["head_config"] = {**state["head_config"], "hidden": 3}
    torch.save(state, broken)
    with pytest.raises(CheckpointError, match="its model does not fit"):
        load_trained_head(str(broken), torch.device("cpu"))


def test_huge_frames_are_resized_one_at_a_time_with_the_batched_result(tmp_path):
    import torch.nn.functional as F

    from m3net.extract.transforms import resize_frames

    frames = np.random.default_rng(0).integers(0, 256, (3, 90, 160, 3), dtype=np.uint8)
    batched = F.interpolate(torch.as_tensor(frames).permute(0, 3, 1, 2).float(), size=(64, 64), mode="bilinear",
                            align_corners=False, antialias=True).round_().clamp_(0, 255).to(torch.uint8)
    assert torch.equal(resize_frames(frames, (64, 64)), batched)
    code = ("import resource, numpy as np\nfrom m3net.extract.transforms import resize_frames\n"
            "frames = np.zeros((8, 4000, 4000, 3), np.uint8)\n"
            "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "resize_frames(frames, (256, 256))\n"
            "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) // 1024)\n")
    extra_mib = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                   env={**os.environ, "OMP_NUM_THREADS": "1"}).stdout.strip())
    assert extra_mib < 600, extra_mib  # all 8 frames in float32 at once took ~3 GB


def test_a_failed_checkpoint_write_leaves_the_previous_one_and_no_tmp(tmp_path, monkeypatch):
    from m3net.train import checkpoint

    path = tmp_path / "last.pt"
    checkpoint.save_checkpoint(str(path), step=1)

    def disk_full(obj, f):
        open(f, "wb").write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", disk_full)
    with pytest.raises(CheckpointError, match="No space left on device.*previous checkpoint there is unchanged"):
        checkpoint.save_checkpoint(str(path), step=2)
    assert sorted(os.listdir(tmp_path)) == ["last.pt"]
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["step"] == 1


def test_a_log_window_after_resume_averages_only_the_episodes_it_ran():
    from m3net.train.loop import Window

    window = Window().reset()
    for loss in (1.0, 3.0):  # two episodes since the resume, though the cadence is every 4
        window.add({"loss": loss, "views": {"y": loss}})
    window.add(None)  # a skipped episode
    row = window.row(step=8)
    assert row["loss"] == 2.0 and row["views_loss"] == "y=2.0000" and row["skipped_episodes"] == 1


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
