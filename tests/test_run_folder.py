"""The training run folder (m3net.train.loop, m3net.train.checkpoint): one writer, nothing lost on a crash
or a failed write, a non-finite loss stops with the last good state, garbage checkpoints are named errors."""
import csv
import json
import os

import pytest
import torch
from click.testing import CliRunner
from helpers_locks import hold_lock

from m3net.cli import main
from m3net.errors import CheckpointError, LockError, NonFiniteError
from m3net.train.checkpoint import load_checkpoint
from m3net.train.loop import EpisodeTask, Interrupted, RunFolder, Schedule, run_episodes
from m3net.train.train_head import TrainConfig, train_head

pytestmark = pytest.mark.usefixtures("aligned_head")


def _episodes(path):
    with open(path, newline="") as fh:
        return [int(row["episodes"]) for row in csv.DictReader(fh)]


def _config(cache, out, **overrides):
    base = dict(cache=cache, out=str(out), head="test-aligned", way=3, shot=1, queries=2, episodes=6, lr=0.05,
                val_every=1000, val_episodes=2, checkpoint_every=3, log_every=1, device="cpu")
    return TrainConfig(**{**base, **overrides})


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(cache, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(NonFiniteError, match="training loss is not finite"):
        train_head(_config(cache, out, lr=1e30, episodes=50, checkpoint_every=1), progress=False)
    state = load_checkpoint(str(out / "last.pt"))
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    assert 0 < state["episodes"] == state["optimizer_steps"] < 50
    stop = json.loads((out / "stopped.json").read_text())  # why it stopped, for whoever trains several heads
    assert stop["saved"] == state["episodes"] < stop["episodes"] and "not finite" in stop["message"]


def test_a_resumed_run_forgets_an_earlier_stop(cache, tmp_path):
    out = tmp_path / "run"
    train_head(_config(cache, out), progress=False)
    (out / "stopped.json").write_text(json.dumps({"episodes": 5, "saved": 3}))
    train_head(_config(cache, out, episodes=9, resume=True), progress=False)
    assert not (out / "stopped.json").exists()  # this attempt trained on without a non-finite loss


def test_a_run_folder_has_one_writer_and_a_dead_writer_leaves_no_stale_lock(cache, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    holder = hold_lock(str(out / ".lock"))
    try:
        with pytest.raises(LockError, match=rf"another m3net process \(pid {holder.pid}\) is writing the run folder"):
            train_head(_config(cache, out), progress=False)
    finally:
        holder.kill()
        holder.wait()
    train_head(_config(cache, out), progress=False)  # the killed holder's lock died with it
    result = CliRunner().invoke(main, ["train-head", "--cache", cache, "--out", str(out), "--head", "test-aligned"])
    assert result.exit_code == 2 and "already holds a run" in result.output and "--resume" in result.output


def test_resume_after_a_crash_logs_every_episode_once(cache, tmp_path):
    out = tmp_path / "run"
    train_head(_config(cache, out, episodes=6, checkpoint_every=3), progress=False)
    # A crash after the checkpoint at episode 6 had logged episodes 7 and 8 already.
    with open(out / "train_log.csv", "a", newline="") as fh:
        fh.write("7,7,1.0,,1.0,0,0.05\n8,8,1.0,,1.0,0,0.05\n")
    train_head(_config(cache, out, episodes=9, resume=True), progress=False)
    assert _episodes(out / "train_log.csv") == list(range(1, 10))
    assert os.path.exists(out / "last.pt") and load_checkpoint(str(out / "last.pt"))["episodes"] == 9


def test_a_run_saved_before_the_episodes_keys_resumes_exactly(cache, tmp_path):
    """Checkpoints with "step" (no "episodes", "optimizer_steps") and logs keyed by "step" still resume: the
    result equals an uninterrupted run and the logs get the current header."""
    train_head(_config(cache, tmp_path / "whole", episodes=9), progress=False)
    out = tmp_path / "old"
    train_head(_config(cache, out, episodes=6), progress=False)
    for name in ("last.pt", "best.pt"):
        state = torch.load(out / name, weights_only=True)
        state["step"] = state.pop("episodes")
        del state["optimizer_steps"]
        torch.save(state, out / name)
    for name in ("train_log.csv", "val_log.csv"):
        with open(out / name, newline="") as fh:
            rows = list(csv.DictReader(fh))
        with open(out / name, "w", newline="") as fh:
            fields = ["step"] + [k for k in rows[0] if k not in ("episodes", "optimizer_steps")]
            writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows([{**r, "step": r["episodes"]} for r in rows])
    assert load_checkpoint(str(out / "last.pt"))["step"] == 6
    train_head(_config(cache, out, episodes=9, resume=True), progress=False)
    whole, resumed = (load_checkpoint(str(d / "last.pt")) for d in (tmp_path / "whole", out))
    assert resumed["episodes"] == resumed["optimizer_steps"] == 9
    assert all(torch.equal(whole["model"][k], resumed["model"][k]) for k in whole["model"])
    with open(out / "train_log.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["episodes"]) for r in rows] == list(range(1, 10))
    assert [r["optimizer_steps"] for r in rows] == [""] * 6 + ["7", "8", "9"]


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
    for loss in (1.0, 3.0):  # two steps of 2 episodes since the resume, though the cadence is every 8
        window.add({"loss": loss, "views": {"y": loss}}, episodes=2)
    window.add(None, episodes=2)  # a skipped step
    row = window.row()
    assert row["loss"] == 2.0 and row["views_loss"] == "y=2.0000" and row["skipped_episodes"] == 2
    assert window.trained == 4



class CountingTask(EpisodeTask):
    """No model: every train_step "trains" one episode and ``accumulate`` of them make an optimizer step (the state is
    whole between steps); validation returns ``accuracies`` in turn; Ctrl-C comes after ``interrupt_at`` episodes."""

    def __init__(self, accuracies=(), accumulate=1, interrupt_at=None):
        self.accuracies, self.accumulate, self.interrupt_at = iter(accuracies), accumulate, interrupt_at
        self.trained, self.validated = 0, []

    def train_step(self, episodes):
        if episodes == self.interrupt_at:
            raise KeyboardInterrupt
        self.trained += 1
        return {"loss": 1.0}

    def validate(self, episodes):
        self.validated.append(episodes)
        return next(self.accuracies), 0.0

    def snapshot(self):
        return {"trained": self.trained}

    def optimizer_steps(self):
        return self.trained // self.accumulate

    def whole(self):
        return self.trained % self.accumulate == 0


def _saved(path):
    return torch.load(path, weights_only=True)


def test_a_task_validates_and_saves_at_the_first_whole_state_at_or_after_each_interval(tmp_path):
    task = CountingTask(accuracies=[50.0, 70.0, 60.0], accumulate=2)
    schedule = Schedule(episodes=10, log_every=5, val_every=3, checkpoint_every=5, validating=True)
    with RunFolder(str(tmp_path), resume=False) as run:
        assert run_episodes(run, schedule, task, 0, -1.0, progress=False) == (10, 70.0, 1)
    assert task.validated == [4, 6, 10]  # 3 and 9 fall between optimizer steps; 10 is the last episode
    assert _episodes(tmp_path / "val_log.csv") == [4, 6, 10]
    assert _episodes(tmp_path / "train_log.csv") == [5, 10]  # logs need no whole state
    best, last = _saved(tmp_path / "best.pt"), _saved(tmp_path / "last.pt")
    assert (best["episodes"], best["trained"], best["best_val_acc"]) == (6, 6, 70.0)
    assert (last["episodes"], last["optimizer_steps"], last["trained"], last["stale_validations"]) == (10, 5, 10, 1)


def test_a_task_stops_after_patience_validations_without_a_new_best(tmp_path):
    task = CountingTask(accuracies=[50.0, 60.0, 60.0, 55.0, 90.0])
    schedule = Schedule(episodes=20, log_every=1, val_every=1, checkpoint_every=20, validating=True, patience=2)
    with RunFolder(str(tmp_path), resume=False) as run:
        assert run_episodes(run, schedule, task, 0, -1.0, progress=False) == (4, 60.0, 2)
    assert task.validated == [1, 2, 3, 4] and task.trained == 4  # a tie is no new best
    assert _saved(tmp_path / "best.pt")["episodes"] == 2
    assert (_saved(tmp_path / "last.pt")["episodes"], _saved(tmp_path / "last.pt")["stale_validations"]) == (4, 2)


@pytest.mark.parametrize("interrupt_at, saved", [(6, 6), (7, 4)])  # checkpoints fall on 4 and 8
def test_ctrl_c_saves_a_task_only_when_its_state_is_whole(tmp_path, interrupt_at, saved):
    task = CountingTask(accumulate=2, interrupt_at=interrupt_at)
    schedule = Schedule(episodes=10, log_every=1, val_every=10, checkpoint_every=4, validating=False)
    with RunFolder(str(tmp_path), resume=False) as run, \
            pytest.raises(Interrupted, match=f"last.pt holds episode {saved};") as raised:
        run_episodes(run, schedule, task, 0, -1.0, progress=False)
    assert raised.value.exit_code == 130
    assert (_saved(tmp_path / "last.pt")["episodes"], _saved(tmp_path / "last.pt")["trained"]) == (saved, saved)
    assert not os.path.exists(tmp_path / "best.pt")  # not validating
