"""--input-norm: channel statistics stored in the cache, applied in the feature bank for every head alike
(every residency, --pool-on-load), carried by checkpoints, and refused where it would feed a head other inputs."""
import shutil

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from helpers_cache import order_only_cache, train_aligned

from m3net.cache import CacheError, cache_info, channel_statistics, load_cache, write_channel_statistics
from m3net.cli import main
from m3net.data.episodes import EpisodeSampler
from m3net.errors import ConfigError
from m3net.model import build_head
from m3net.train.checkpoint import load_checkpoint, save_checkpoint
from m3net.train.evaluate import EvalConfig, evaluate
from m3net.train.features import VARIANCE_EPS, InputNorm, input_norm_for, open_bank

pytestmark = pytest.mark.usefixtures("aligned_head")
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def stats_cache(cache, tmp_path_factory):
    """A copy of the session cache with its training statistics stored."""
    path = str(tmp_path_factory.mktemp("stats") / "order.h5")
    shutil.copy(cache, path)
    write_channel_statistics(path, progress=False)
    return path


def _train_values(path):
    """Every value of each channel in the done training rows, in float64: (N, C)."""
    with h5py.File(path, "r") as f:
        rows = np.flatnonzero(f["done"][()] & (f["split"][()].astype(str) == "train"))
        return f["features"][rows].astype(np.float64).reshape(-1, f["features"].shape[-1])


def test_statistics_equal_a_float64_oracle_and_are_stored_with_their_rows(stats_cache):
    values = _train_values(stats_cache)
    stats = channel_statistics(stats_cache, "--input-norm standardize")
    assert np.allclose(stats.mean, values.mean(axis=0), rtol=1e-12, atol=1e-12)
    assert np.allclose(stats.std, values.std(axis=0), rtol=1e-10, atol=1e-12)
    assert stats.values_per_channel == len(values) and stats.split == "train"
    info = cache_info(stats_cache)["channel_stats"]
    assert info["rows"] == len(stats.rows) and not info["stale"]


def test_missing_or_stale_statistics_are_refused_naming_the_command(cache, stats_cache, tmp_path):
    with pytest.raises(CacheError, match=r"no channel statistics, which --input-norm center needs; run `m3net "
                                         r"cache-stats"):
        channel_statistics(cache, "--input-norm center")
    stale = str(tmp_path / "stale.h5")
    shutil.copy(stats_cache, stale)
    with h5py.File(stale, "r+") as f:  # a training row finished after the statistics were computed
        row = int(f["channel_stats/rows"][0])
        f["done"][row] = False
    with pytest.raises(CacheError, match="extract has finished other rows since"):
        channel_statistics(stale, "--input-norm standardize")
    assert cache_info(stale)["channel_stats"]["stale"]


def test_bank_standardises_identically_in_every_residency_and_pooling_commutes(stats_cache):
    stats = channel_statistics(stats_cache, "test")
    norm = InputNorm("standardize", stats)
    raw = load_cache(stats_cache, splits=("test",))
    banks = {name: open_bank(stats_cache, ("test",), CPU, resident, pool=pool, prefetch=prefetch, norm=norm)[1]
             for name, resident, pool, prefetch in (("memory", "device", None, 0), ("disk", "disk", None, 0),
                                                    ("prefetched", "disk", None, 2), ("pooled", "device", 1, 0),
                                                    ("pooled-disk", "disk", 1, 2))}
    sampler = EpisodeSampler(raw.labels, raw.split, "test", 3, 2, 1, seed=3)
    for name in ("disk", "prefetched", "pooled-disk"):
        banks[name].prefetch(sampler, 0, 4)
    scale = 1 / np.sqrt(stats.std**2 + VARIANCE_EPS)
    for index in range(4):
        episode = sampler.episode(index)
        got = {name: bank.episode(episode) for name, bank in banks.items()}
        for name in ("disk", "prefetched"):  # the same bits whatever the residency
            assert all(torch.equal(a, b) for a, b in zip(got["memory"], got[name]))
        assert all(torch.equal(a, b) for a, b in zip(got["pooled"], got["pooled-disk"]))
        support = got["memory"][0].double()  # (S, T, 7, 7, C), standardised and rounded to float16
        oracle = (raw.features[episode.support_rows].astype(np.float64) - stats.mean) * scale  # float64 oracle
        assert np.allclose(support.numpy(), oracle, rtol=1e-3, atol=1e-3)
        # pooling on load (a mean) and the per-channel affine map commute: pooled-then-normalised equals the
        # spatial mean of the normalised maps up to float16 rounding of unit-scale values
        pooled = got["pooled"][0].double()[:, :, 0, 0]
        assert np.allclose(pooled.numpy(), oracle.mean(axis=(2, 3)), rtol=1e-3, atol=2e-3)
        assert np.allclose(pooled.numpy(), support.mean(dim=(2, 3)).numpy(), rtol=1e-3, atol=2e-3)
    for bank in banks.values():
        bank.close()


def test_checkpoint_carries_its_normalisation_and_evaluate_applies_it(stats_cache, tmp_path):
    run = train_aligned(stats_cache, tmp_path / "run", input_norm="standardize")
    state = load_checkpoint(run["last"])
    assert state["input_norm"] == "standardize" and state["train_config"]["input_norm"] == "standardize"
    stats = channel_statistics(stats_cache, "test")
    assert np.array_equal(state["input_statistics"]["mean"].numpy(), stats.mean)
    assert np.array_equal(state["input_statistics"]["rows"].numpy(), stats.rows)
    scored = evaluate(EvalConfig(cache=stats_cache, checkpoints=(run["last"],), heads=("otam",), way=3, episodes=5,
                                 device="cpu"), progress=False)  # auto: the checkpoint's own
    assert scored["input_norm"]["input_norm"] == "standardize"
    assert scored["input_norm"]["statistics"]["rows"] == len(stats.rows)
    with pytest.raises(ConfigError, match=r"--input-norm none: .* was trained with --input-norm standardize"):
        evaluate(EvalConfig(cache=stats_cache, checkpoints=(run["last"],), input_norm="none", way=3, episodes=5,
                            device="cpu"), progress=False)
    plain = train_aligned(stats_cache, tmp_path / "plain")
    assert load_checkpoint(plain["last"])["input_norm"] == "none"
    with pytest.raises(ConfigError, match="trained with different --input-norm"):
        evaluate(EvalConfig(cache=stats_cache, checkpoints=(run["last"], plain["last"]), way=3, episodes=5,
                            device="cpu"), progress=False)


def test_parameter_free_heads_take_the_command_line_choice(cache, stats_cache):
    config = dict(heads=("otam", "protonet"), way=3, episodes=6, device="cpu")
    normalised = evaluate(EvalConfig(cache=stats_cache, input_norm="standardize", **config), progress=False)
    raw = evaluate(EvalConfig(cache=stats_cache, **config), progress=False)
    assert normalised["input_norm"]["input_norm"] == "standardize" and raw["input_norm"]["input_norm"] == "none"
    assert normalised["per_episode_y"] != raw["per_episode_y"]  # the heads saw other inputs
    with pytest.raises(CacheError, match="cache-stats"):  # no statistics in this cache: refused, not skipped
        evaluate(EvalConfig(cache=cache, input_norm="center", **config), progress=False)


def test_a_checkpoints_normalisation_applies_outside_the_bank_as_inside(stats_cache, tmp_path):
    """What predict and the Python API (FewShotClassifier._head_input) apply between backbone and head."""
    from m3net.api import FewShotClassifier

    path = train_aligned(stats_cache, tmp_path / "run", input_norm="center")["last"]
    state = load_checkpoint(path)
    raw = load_cache(stats_cache, splits=("val",))
    _, bank, _ = open_bank(stats_cache, ("val",), CPU, "device", norm=InputNorm("center", channel_statistics(
        stats_cache, "test")))
    norm = input_norm_for("auto", [(path, state)])
    assert np.array_equal(norm.normalise_cached(raw.features), bank.features.numpy())
    with pytest.raises(ConfigError, match="trained with --input-norm center"):
        FewShotClassifier.from_checkpoint(path, input_norm="standardize", device="cpu")


def test_head_level_and_run_level_normalisation_are_not_combined(stats_cache, tmp_path):
    with pytest.raises(ConfigError, match="normalised twice"):
        train_aligned(stats_cache, tmp_path / "twice", head="m3net", input_norm="standardize",
               head_options={"input_norm": "standardize", "proj_dim": 8})


def test_an_old_checkpoint_with_the_head_level_input_norm_scores_as_before(tmp_path):
    """A checkpoint written before --input-norm (no input_norm key; the m3net head standardising inside with
    its own training statistics) is scored by its own head on the raw cached maps, as it always was."""
    stats_cache = str(order_only_cache(tmp_path / "noisy.h5", noise=20.0))  # hard enough for mistakes
    write_channel_statistics(stats_cache, progress=False)
    run = train_aligned(stats_cache, tmp_path / "old", head="m3net", episodes=4, val_episodes=0,
                 head_options={"input_norm": "standardize", "proj_dim": 8})
    state = load_checkpoint(run["last"])
    old = {k: v for k, v in state.items() if k not in ("input_norm", "input_statistics", "stale_validations",
                                                           "format")}
    old["train_config"] = {k: v for k, v in state["train_config"].items()
                           if k not in ("input_norm", "accumulate", "patience")}
    path = str(tmp_path / "old.pt")
    save_checkpoint(path, **old)
    scored = evaluate(EvalConfig(cache=stats_cache, checkpoints=(path,), way=5, episodes=12, device="cpu"),
                      progress=False)
    assert scored["input_norm"]["input_norm"] == "none"
    head = build_head("m3net", **state["head_config"])
    head.load_state_dict(state["model"])
    head.eval()
    assert head.input_norm.count > 0  # its own statistics, from training
    predictions = {}  # where each test query goes, scored by hand on raw and on standardised maps
    for name, norm in (("raw", None), ("standardised", InputNorm("standardize", channel_statistics(stats_cache, "t")))):
        meta, bank, _ = open_bank(stats_cache, ("test",), CPU, "device", norm=norm)
        sampler = EpisodeSampler(meta.labels, meta.split, "test", 5, 1, 1, seed=0)
        counts = np.zeros((5, 5), dtype=np.int64)
        with torch.no_grad():
            for index in range(12):
                episode = sampler.episode(index)
                support, labels, query, _ = bank.episode(episode)
                predicted = episode.classes[head(support, labels, query)["y"].argmax(dim=-1).numpy()]
                compact = {int(c): i for i, c in enumerate(sampler.classes)}
                np.add.at(counts, ([compact[int(c)] for c in episode.classes[episode.query_labels]],
                                   [compact[int(c)] for c in predicted]), 1)
        predictions[name] = counts.tolist()
    assert predictions["raw"] != predictions["standardised"]  # the check below can tell the inputs apart
    assert scored["confusion"][next(iter(scored["confusion"]))]["y"] == predictions["raw"]


def test_cache_stats_command_and_cache_info(cache, tmp_path):
    path = str(tmp_path / "c.h5")
    shutil.copy(cache, path)
    result = CliRunner().invoke(main, ["cache-stats", path])
    assert result.exit_code == 0, result.output
    assert "channel statistics of 64 train rows" in result.output
    info = CliRunner().invoke(main, ["cache-info", path])
    assert "channel statistics: over 64 train rows" in info.output
    assert CliRunner().invoke(main, ["train-head", "--cache", cache, "--out", str(tmp_path / "r"), "--head",
                                     "test-aligned", "--input-norm", "standardize"]).exit_code == 1


def test_finetune_takes_its_statistics_from_a_cache_of_its_backbone_or_fails_early(stats_cache, tmp_path):
    from m3net.cache import ProvenanceError
    from m3net.train.finetune import FinetuneConfig, check_stats_cache, finetune_input_norm

    config = FinetuneConfig(dataset="synthetic", root=str(tmp_path), out=str(tmp_path / "ft"), weights="random",
                            frames=4, input_norm="standardize")
    with pytest.raises(ConfigError, match="--stats-cache CACHE"):
        finetune_input_norm(config, None, "last.pt")
    with pytest.raises(ConfigError, match="only read with --input-norm center or standardize"):
        finetune_input_norm(FinetuneConfig(dataset="synthetic", root=str(tmp_path), stats_cache=stats_cache), None,
                            "last.pt")
    given = FinetuneConfig(dataset="synthetic", root=str(tmp_path), weights="random", frames=4, crop=224,
                           input_norm="standardize", stats_cache=stats_cache)
    norm = finetune_input_norm(given, None, "last.pt")
    assert norm.kind == "standardize" and np.array_equal(norm.statistics.mean,
                                                         channel_statistics(stats_cache, "t").mean)
    with pytest.raises(ProvenanceError, match="weights_sha256: cache has '', this run 'random-seed-0'"):
        check_stats_cache(given, {"weights_sha256": "random-seed-0"})


def test_resume_keeps_the_runs_statistics(stats_cache, tmp_path):
    full = train_aligned(stats_cache, tmp_path / "full", input_norm="standardize")
    train_aligned(stats_cache, tmp_path / "split", input_norm="standardize", episodes=4)
    resumed = train_aligned(stats_cache, tmp_path / "split", input_norm="standardize", resume=True)
    a, b = load_checkpoint(full["last"])["model"], load_checkpoint(resumed["last"])["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ConfigError, match="input_norm='standardize' \\(now 'none'\\)"):
        train_aligned(stats_cache, tmp_path / "split", input_norm="none", episodes=12, resume=True)
