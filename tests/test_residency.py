"""Feature residency: the head stage gives the same results whether the cache's features sit in
device memory, host memory or are streamed from the file, and picks one that fits."""
import numpy as np
import pytest
import torch
from helpers_cache import order_only_cache

from m3net.cache import write_cache_arrays
from m3net.data.episodes import EpisodeSampler
from m3net.errors import ConfigError
from m3net.train.checkpoint import load_checkpoint
from m3net.train.common import choose_residency, open_bank
from m3net.train.evaluate import EvalConfig, evaluate
from m3net.train.loop import TrainConfig, train_head

pytestmark = pytest.mark.usefixtures("aligned_head")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(order_only_cache(tmp_path_factory.mktemp("cache") / "order.h5"))


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
    for resident in ("device", "disk"):
        out = tmp_path / resident
        train_head(TrainConfig(cache=cache, out=str(out), head="test-aligned", way=3, shot=1, queries=2,
                               episodes=8, lr=0.05, val_every=4, val_episodes=3, checkpoint_every=4,
                               log_every=4, device="cpu", resident=resident), progress=False)
        states.append(load_checkpoint(str(out / "last.pt"))["model"])
        summary = evaluate(EvalConfig(cache=cache, checkpoints=(str(out / "last.pt"),), heads=("otam",),
                                      way=3, episodes=6, device="cpu", resident=resident), progress=False)
        results.append([(r["head"].split(" ")[0], r["view"], r["accuracy"]) for r in summary["results"]])
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert results[0] == results[1]


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
