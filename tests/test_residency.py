"""Feature residency: the head stage gives the same results whether the cache's features sit in
device memory, host memory or are streamed from the file, and picks one that fits."""
import json
import shutil
import threading

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from helpers_cache import train_aligned

from m3net.cache import CacheError, PrefetchingReader, RowReader, load_cache, write_cache_arrays
from m3net.cli import main
from m3net.data.episodes import EpisodeSampler
from m3net.errors import ConfigError
from m3net.train.checkpoint import load_checkpoint
from m3net.train.evaluate import EvalConfig, evaluate
from m3net.train.features import choose_residency, open_bank
from m3net.train.loop import Interrupted

pytestmark = pytest.mark.usefixtures("aligned_head")


def test_streamed_episodes_equal_resident_ones(cache):
    _, resident, where = open_bank(cache, ("train",), torch.device("cpu"), "device")
    meta, streamed, streamed_where = open_bank(cache, ("train",), torch.device("cpu"), "disk")
    assert "on cpu" in where and "streamed from" in streamed_where
    sampler = EpisodeSampler(meta.labels, meta.split, "train", 3, 2, 2, seed=4)
    for index in range(5):
        episode = sampler.episode(index)
        for a, b in zip(resident.episode(episode), streamed.episode(episode)):
            assert torch.equal(a, b)
    streamed.close()


def test_training_and_evaluation_do_not_depend_on_residency(cache, tmp_path):
    states, results = [], []
    for resident, prefetch in (("device", 0), ("disk", 0), ("disk", 3)):
        out = tmp_path / f"{resident}-{prefetch}"
        train_aligned(cache, out, resident=resident, prefetch=prefetch)
        states.append(load_checkpoint(str(out / "last.pt"))["model"])
        summary = evaluate(EvalConfig(cache=cache, checkpoints=(str(out / "last.pt"),), heads=("otam",),
                                      way=3, episodes=6, device="cpu", resident=resident, prefetch=prefetch),
                           progress=False)
        results.append([(r["head"].split(" ")[0], r["view"], r["accuracy"]) for r in summary["results"]])
    for state, result in zip(states[1:], results[1:]):
        assert all(torch.equal(states[0][k], state[k]) for k in states[0])
        assert result == results[0]


def test_auto_picks_what_fits_and_a_forced_choice_that_does_not_fit_is_an_error():
    cpu = torch.device("cpu")
    assert choose_residency(2**20, cpu)[0] == "device"
    choice, reason = choose_residency(2 * 2**30, cpu, memory_limit=1.0)
    assert choice == "disk" and "2.00 GiB of features" in reason
    with pytest.raises(ConfigError, match="--resident host: the features need 2.00 GiB, only 1.00 GiB"):
        choose_residency(2 * 2**30, cpu, "host", memory_limit=1.0)


def test_view_choice_is_independent_of_the_episode_draw(tmp_path):
    """Views come from their own stream: the view a clip gets does not depend on its class."""
    rng = np.random.default_rng(0)
    path = write_cache_arrays(tmp_path / "v.h5", rng.standard_normal((40, 3, 1, 1, 1, 2)).astype(np.float16),
                              np.repeat(np.arange(10), 4), [str(c) for c in range(10)],
                              [f"c{i}" for i in range(40)], ["train"] * 40,
                              {"dataset": "views", "num_frames": 1, "views": 3})
    meta, bank, _ = open_bank(str(path), ("train",), torch.device("cpu"), "device")
    sampler = EpisodeSampler(meta.labels, meta.split, "train", 5, 1, 1, seed=0)
    low, high = [], []
    for index in range(3000):
        episode = sampler.episode(index)
        views = sampler.view_rng(index).integers(0, 3, size=len(episode.support_rows))
        for c, view in zip(episode.classes[episode.support_labels], views):
            (low if c < 5 else high).append(view)
    assert abs(np.mean(low) - np.mean(high)) < 0.05  # 7500 draws per side: sd of the difference ≈ 0.013


@pytest.mark.parametrize("resident", ["device", "disk"])
def test_pooling_on_load_gives_the_heads_result_with_a_third_of_the_memory(cache, resident):
    from m3net.model import build_head

    meta, full, _ = open_bank(cache, ("test",), torch.device("cpu"), "device")
    _, pooled, where = open_bank(cache, ("test",), torch.device("cpu"), resident, pool=4)
    assert "pooled to 4x4" in where and pooled.clip_shape[1:3] == (4, 4)
    torch.manual_seed(0)
    head = build_head("m3net", feature_dim=16, num_frames=4, proj_dim=8).eval()
    assert head.input_pool() == 4
    assert build_head("m3net", feature_dim=16, num_frames=4, use_ifce=False).input_pool() is None
    sampler = EpisodeSampler(meta.labels, meta.split, "test", 3, 1, 1, seed=0)
    for index in range(3):
        episode = sampler.episode(index)
        a, b = head(*full.episode(episode)[:3]), head(*pooled.episode(episode)[:3])
        for view in ("y1", "y2", "y3"):
            assert torch.allclose(a[view], b[view], rtol=2e-2, atol=2e-2), view
    pooled.close()


def _prefetch_threads():
    return [t for t in threading.enumerate() if t.name.startswith("m3net prefetch")]


def _assert_same(a, b):
    assert len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def test_prefetched_episodes_equal_resident_ones_in_and_out_of_the_announced_order(cache, monkeypatch):
    import m3net.cache.reader as reader_module

    checks = []
    real_check = reader_module.check_not_being_written
    monkeypatch.setattr(reader_module, "check_not_being_written", lambda *a: checks.append(a) or real_check(*a))
    meta, resident, _ = open_bank(cache, ("train", "val"), torch.device("cpu"), "device")
    _, streamed, where = open_bank(cache, ("train", "val"), torch.device("cpu"), "disk", prefetch=3)
    assert "3 episodes read ahead" in where and len(_prefetch_threads()) == 1
    opened = len(checks)
    train = EpisodeSampler(meta.labels, meta.split, "train", 3, 1, 2, seed=4)
    val = EpisodeSampler(meta.labels, meta.split, "val", 3, 1, 1, seed=5)
    streamed.prefetch(train, 2, 12)
    asked = [(train, 2), (train, 3)]
    asked += [(val, i) for i in range(4)]  # a second plan while the first one waits, full, as validation does
    asked += [(train, 4), (train, 9), (train, 5)]  # 9 out of order: read on demand, the plan goes on
    asked += [(train, i) for i in range(6, 13)]  # 12: past the plan's end
    streamed.prefetch(val, 0, 4)
    for sampler, index in asked:
        _assert_same(resident.episode(sampler.episode(index)), streamed.episode(sampler.episode(index)))
    streamed.close()
    assert _prefetch_threads() == []
    assert len(checks) == opened  # the write lock is checked when the bank opens, never by the reader thread


def test_prefetched_views_are_the_ones_drawn_in_memory(tmp_path):
    rng = np.random.default_rng(0)
    path = write_cache_arrays(tmp_path / "v.h5", rng.standard_normal((40, 3, 2, 1, 1, 4)).astype(np.float16),
                              np.repeat(np.arange(10), 4), [str(c) for c in range(10)],
                              [f"c{i}" for i in range(40)], ["train"] * 40,
                              {"dataset": "views", "num_frames": 2, "views": 3})
    meta, resident, _ = open_bank(str(path), ("train",), torch.device("cpu"), "device")
    _, streamed, _ = open_bank(str(path), ("train",), torch.device("cpu"), "disk", prefetch=2)
    sampler = EpisodeSampler(meta.labels, meta.split, "train", 4, 1, 2, seed=1)
    streamed.prefetch(sampler, 0, 6)
    for index in range(6):
        episode = sampler.episode(index)
        _assert_same(resident.episode(episode, sampler.view_rng(index)),
                     streamed.episode(episode, sampler.view_rng(index)))
    streamed.close()



def test_a_resumed_streamed_run_with_prefetch_equals_an_uninterrupted_resident_one(cache, tmp_path):
    train_aligned(cache, tmp_path / "memory", resident="device")
    train_aligned(cache, tmp_path / "streamed", resident="disk", prefetch=2, episodes=5)
    train_aligned(cache, tmp_path / "streamed", resident="disk", prefetch=3, resume=True)  # prefetch may change
    a, b = (load_checkpoint(str(tmp_path / run / "last.pt")) for run in ("memory", "streamed"))
    assert a["episodes"] == b["episodes"] == 8 and a["best_val_acc"] == b["best_val_acc"]
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert _prefetch_threads() == []


def test_a_bad_row_read_ahead_stops_training_at_the_episode_that_needs_it(cache, tmp_path):
    import h5py

    path = str(tmp_path / "bad.h5")
    shutil.copy(cache, path)
    meta = load_cache(path, splits=("train", "val"), features=False)
    sampler = EpisodeSampler(meta.labels, meta.split, "train", 3, 1, 2, seed=0)
    bad_row = 5
    first_bad = next(i for i in range(1000) if bad_row in np.concatenate([sampler.episode(i).support_rows,
                                                                          sampler.episode(i).query_rows]))
    assert first_bad > 0
    with h5py.File(path, "r+", locking=False) as f:  # in place: the chunk layout stays the writer's
        f["features"][meta.rows[bad_row], 0, 0, 0, 0] = np.nan
    out = tmp_path / "run"
    with pytest.raises(CacheError, match=rf"{path}: the features of row {meta.rows[bad_row]} hold NaN or inf"):
        train_aligned(path, out, resident="disk", prefetch=4, episodes=first_bad + 10, checkpoint_every=1,
                      val_episodes=0)
    assert load_checkpoint(str(out / "last.pt"))["episodes"] == first_bad  # every episode before it trained
    assert _prefetch_threads() == []


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_the_reader_thread_ends_when_the_training_step_fails_or_is_interrupted(cache, tmp_path, monkeypatch,
                                                                               aligned_head, error):
    calls = []

    def loss(self, outputs, labels):
        calls.append(1)
        if len(calls) == 3:
            raise error
        return outputs["y"].sum() * 0

    monkeypatch.setattr(aligned_head, "loss", loss)
    with pytest.raises(Interrupted if isinstance(error, KeyboardInterrupt) else RuntimeError):
        train_aligned(cache, tmp_path / "run", resident="disk", prefetch=4, val_episodes=0)
    assert _prefetch_threads() == []


def test_background_read_errors_reach_the_caller_as_cache_errors_and_nothing_hangs(cache):
    reader = PrefetchingReader(RowReader(cache), depth=2)

    def rows_of(index):
        return [index, 1 // (3 - index)]  # index 3 fails inside the thread

    plan = reader.plan(rows_of, 0, 6)
    assert [reader.take(plan).shape[0] for _ in range(3)] == [2, 2, 2]
    with pytest.raises(CacheError, match=rf"{cache}: reading features in the background failed \(.*division"):
        reader.take(plan)
    assert not plan.expects(np.asarray(rows_of(4)))  # nothing is handed over past a failed read
    with pytest.raises(CacheError, match=rf"{cache}: cannot read the features of row 100000"):
        reader.read([100000])
    assert reader.read([2, 0]).shape[0] == 2  # the thread goes on after a failed read
    reader.close()
    with pytest.raises(CacheError, match="background reader stopped"):
        reader.read([0])
    assert _prefetch_threads() == []


@pytest.mark.slow
def test_bench_residency_writes_one_row_per_setting(tmp_path):
    result = CliRunner().invoke(main, ["-q", "bench-residency", "--clips", "150", "--classes", "25", "--channels", "8",
                                       "--frames", "2", "--memory-limit", "1e-6", "--train-episodes", "2",
                                       "--eval-episodes", "2", "--prefetch", "2", "--work", str(tmp_path / "work"),
                                       "--device", "cpu", "--out-dir", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    record = json.loads(next((tmp_path / "out").glob("bench_residency_*.json")).read_text())
    assert [row["residency"] for row in record["rows"]] == ["in memory", "streamed, prefetch 2"]
    assert record["rows"][0]["train_vs_memory"] == 1.0 and record["config"]["prefetch"] == [2]
