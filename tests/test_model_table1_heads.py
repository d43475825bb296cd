"""The Table 1 heads added beside M3Net: pal, strm, hyrsm (and trx in its reference setting).

The registry-wide contract (shapes, fp16, inductive scoring, fitting one episode) is in
test_model_heads.py; here: relabelling, gradients, method-specific parts, option errors, and a
short train-head run that beats the untrained head on a generated cache.
"""
import itertools

import numpy as np
import pytest
import torch
from helpers_cache import ORDER_ATTRS
from test_model_heads import build, make_episode

from m3net.cache import load_cache, write_cache_arrays
from m3net.data.episodes import EpisodeSampler
from m3net.errors import ConfigError
from m3net.model import build_head
from m3net.model.hyrsm import bidirectional_mean_hausdorff
from m3net.model.pal import prototype_centred_loss
from m3net.train.evaluate import load_trained_head
from m3net.train.features import FeatureBank
from m3net.train.metrics import episode_accuracies
from m3net.train.train_head import TrainConfig, train_head

TABLE1_HEADS = ("pal", "strm", "hyrsm", "trx")


@pytest.mark.parametrize("name", TABLE1_HEADS)
def test_relabelling_classes_permutes_the_logits(name):
    head = build(name).eval()
    support, support_labels, query, _ = make_episode(4, 2, 2, seed=3)
    permutation = torch.tensor([2, 0, 3, 1])  # old class c becomes class permutation[c]
    with torch.no_grad():
        before = head(support, support_labels, query)
        after = head(support, permutation[support_labels], query)
    for view in before:
        assert torch.allclose(after[view][:, permutation], before[view], atol=1e-5), view


@pytest.mark.parametrize("name", TABLE1_HEADS)
def test_gradients_reach_every_parameter(name):
    """Two steps: STRM's patch-attention gate γ starts at 0, which zeroes its q/k/v gradients at init."""
    head = build(name)
    support, support_labels, query, query_labels = make_episode(3, 2, 2)
    optimizer = torch.optim.SGD(head.parameters(), lr=0.01)
    for _ in range(2):
        optimizer.zero_grad()
        head.loss(head(support, support_labels, query), query_labels).backward()
        optimizer.step()
    silent = [n for n, p in head.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not silent, silent


def test_strm_views_and_weighted_loss():
    head = build("strm").eval()
    support, support_labels, query, query_labels = make_episode(3, 1, 2)
    with torch.no_grad():
        out = head(support, support_labels, query)
    assert set(out) == {"y", "y_frame", "y_patch"}
    assert torch.allclose(out["y"], out["y_frame"] + 0.1 * out["y_patch"])
    ce = torch.nn.functional.cross_entropy
    expected = ce(out["y_frame"], query_labels) + 0.1 * ce(out["y_patch"], query_labels)
    assert torch.allclose(head.loss(out, query_labels), expected)


def test_trx_reference_defaults():
    head = build("trx")
    assert head.config.cardinalities == (2, 3) and head.config.dropout == 0.1
    transformer = head.transformers[0]
    assert isinstance(transformer.key[-1], torch.nn.LayerNorm)
    assert isinstance(transformer.value, torch.nn.Linear)  # values are not normalised in the reference


def test_hyrsm_transductive_option_mixes_queries_and_default_does_not():
    support, support_labels, query, _ = make_episode(3, 2, 3)
    for transductive in (False, True):
        head = build("hyrsm", transductive=transductive).eval()
        with torch.no_grad():
            everything = head(support, support_labels, query)["y"]
            first_two = head(support, support_labels, query[:2])["y"]
        assert torch.allclose(everything[:2], first_two, atol=1e-5) != transductive


def test_bi_mhm_is_a_set_metric():
    """Zero between identical clips, and blind to the order of either clip's frames."""
    g = torch.Generator().manual_seed(0)
    query, support = torch.randn(2, 5, 8, generator=g), torch.randn(1, 3, 5, 8, generator=g)
    distance = bidirectional_mean_hausdorff(query, support)  # (2, 3)
    shuffled = bidirectional_mean_hausdorff(query[:, torch.randperm(5, generator=g)],
                                            support[..., torch.randperm(5, generator=g), :])
    assert torch.allclose(distance, shuffled, atol=1e-6)
    assert bidirectional_mean_hausdorff(support[0, :1], support[:, :1]).abs().max() < 1e-5


def test_pal_prototype_centred_loss_by_hand():
    logits = torch.tensor([[2.0, -1.0], [0.5, 1.5], [-2.0, 3.0]])
    labels = torch.tensor([0, 1, 1])
    sim = torch.sigmoid(logits)
    share_0 = sim[0, 0] / (sim[:, 0].sum() + 0.1)
    share_1 = (sim[1, 1] + sim[2, 1]) / (sim[:, 1].sum() + 0.1)
    expected = -(torch.log(share_0) + torch.log(share_1)) / 2
    assert torch.allclose(prototype_centred_loss(logits, labels), expected)


@pytest.mark.parametrize("name, options", [
    ("pal", {"temperature": 0.0}), ("strm", {"cardinalities": (6,)}), ("strm", {"patch_weight": -1.0}),
    ("hyrsm", {"heads": 3}), ("trx", {"cardinalities": ()}), ("trx", {"dropout": 1.0}),
])
def test_bad_options_are_config_errors(name, options):
    with pytest.raises(ConfigError, match=name):
        build(name, **options)


def nuisance_cache(path, kind, channels=16, signal=8, frames=4, clips_per_class=8, classes=(8, 5, 5), nuisance=3.0,
                   noise=0.3, seed=0):
    """Generated cache whose class signal sits on the first ``signal`` channels under a large
    per-clip nuisance vector on the others (constant over the clip, so pooling keeps it).

    kind "order": each class is one ordering of the same ``frames`` patterns (as in
    helpers_cache.order_only_cache, so mean-pooled clips cannot tell classes apart); "detail": each
    class is one constant vector on every frame (so pooled clips can). Untrained heads compare
    mostly nuisance; a learned projection that drops those channels separates the classes.
    """
    rng = np.random.default_rng(seed)
    patterns = 2 * rng.standard_normal((frames, signal))
    orders = list(itertools.permutations(range(frames)))
    rng.shuffle(orders)
    feats, labels, split, ids, names = [], [], [], [], []
    for split_name, count in zip(("train", "val", "test"), classes):
        for _ in range(count):
            cls = len(names)
            names.append(f"{kind}{cls}")
            if kind == "order":
                clean = patterns[list(orders[cls])]  # (T, signal)
            else:
                clean = np.repeat(rng.standard_normal((1, signal)), frames, axis=0)
            for k in range(clips_per_class):
                clip = noise * rng.standard_normal((frames, 7, 7, channels))
                clip[..., :signal] += clean[:, None, None, :]
                clip[..., signal:] += nuisance * rng.standard_normal(channels - signal)
                feats.append(clip)
                labels.append(cls)
                split.append(split_name)
                ids.append(f"{names[-1]}_{k}")
    attrs = {**ORDER_ATTRS, "dataset": f"{kind}-under-nuisance", "num_frames": frames}
    return write_cache_arrays(path, np.asarray(feats, np.float16), labels, names, ids, split, attrs)


def mean_accuracy(head, cache, episodes=60):
    """Mean 3-way 1-shot accuracy of "y" on seeded test episodes of the cache."""
    cached = load_cache(cache, splits=("test",))
    bank = FeatureBank(cached, "cpu")
    sampler = EpisodeSampler(cached.labels, cached.split, "test", 3, 1, 2, seed=5)
    head.eval()
    accuracies = []
    with torch.no_grad():
        for index in range(episodes):
            support, support_labels, query, query_labels = bank.episode(sampler.episode(index))
            accuracies.append(episode_accuracies(head(support, support_labels, query), query_labels)["y"])
    return float(np.mean(accuracies))


# lr per head: the TRX/STRM logits are unnormalised squared distances in the hundreds on these
# caches, so plain SGD needs a small step (STRM diverges at 1e-4 here); HyRSM's Bi-MHM is blind
# to frame order and PAL pools frames away, so they learn the detail cache; PAL's only weights are
# one residual attention over frozen features, so it learns slowly and gets more episodes.
@pytest.mark.parametrize("name, cache_options, lr, episodes, margin", [
    ("strm", {"kind": "order"}, 1e-5, 150, 0.1),
    ("trx", {"kind": "order"}, 1e-4, 150, 0.1),
    ("hyrsm", {"kind": "detail"}, 1e-2, 150, 0.1),
    ("pal", {"kind": "detail", "signal": 12, "nuisance": 2.0}, 1e-3, 1000, 0.05),
])
@pytest.mark.slow
def test_short_training_beats_the_untrained_head(name, cache_options, lr, episodes, margin, tmp_path):
    cache = str(nuisance_cache(tmp_path / "cache.h5", **cache_options))
    torch.manual_seed(0)  # the trainer's initialisation
    before = mean_accuracy(build_head(name, feature_dim=16, num_frames=4), cache)
    result = train_head(TrainConfig(cache=cache, out=str(tmp_path / "run"), head=name, way=3, shot=1, queries=2,
                                    episodes=episodes, lr=lr, lr_step=10_000, val_every=50, val_episodes=20,
                                    checkpoint_every=episodes, log_every=50, device="cpu"), progress=False)
    after = mean_accuracy(load_trained_head(result["last"], "cpu")[0], cache)
    assert after > before + margin, (before, after)
