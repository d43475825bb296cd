"""``m3net evaluate``: accuracy ± 95% CI per view and per head, all on the same seeded episodes.

Trained heads come from checkpoints; parameter-free heads (protonet, tsn-cosine, otam) are scored
straight from the cache. With two or more heads, the paired difference of each head's fused
prediction against the first one is reported with its own CI (same episodes, so the pairing
removes the episode-to-episode variance).
"""
import csv
import dataclasses
import json
import logging
import os

import numpy as np
import torch

from m3net.cache import cache_info
from m3net.config import RunSettings, from_group, setting, settings
from m3net.data.episodes import SPLITS, EpisodeSampler, EpisodeSettings
from m3net.errors import ConfigError, NonFiniteError
from m3net.model import build_head
from m3net.progress import progress_bar
from m3net.runtime import resolve_device
from m3net.train.checkpoint import check_features, features_provenance, load_checkpoint, load_module_state
from m3net.train.features import InputNormSettings, ResidencySettings, input_norm_for, open_bank
from m3net.train.metrics import episode_accuracies, mean_and_ci
from m3net.train.presets import PresetSettings

logger = logging.getLogger(__name__)


@settings
class EvalConfig(EpisodeSettings, InputNormSettings, ResidencySettings, PresetSettings, RunSettings):
    cache: str = setting("", "Feature cache; default: the one the first checkpoint was trained on.", path="file")
    checkpoints: tuple = setting((), "Trained head checkpoints (best.pt of train-head or finetune).", path="file",
                                 option="--checkpoint")
    heads: tuple = setting((), "Parameter-free heads scored from the cache: protonet, tsn-cosine, otam.",
                           option="--head")
    head_options: dict = setting(cli=False, default_factory=dict)  # head name -> options of a parameter-free head
    # One query per class (TRX/OTAM convention) keeps episodes cheap; the CI of the mean over E episodes
    # then cannot fall below the binomial floor 1.96·sqrt(p(1-p)/(N·q·E)) (±0.50 points at 72% over 6000
    # 5-way episodes). The paper's ±0.33 implies more queries per episode: --queries 5 for a like-for-like CI.
    queries: int = from_group(EpisodeSettings, "queries", 1)
    episodes: int = setting(6000, "Test episodes (paper: 6000).", minimum=1)
    split: str = setting("test", "Split whose classes make the episodes.", choices=SPLITS)
    out: str = setting("", "Write results.json and results.csv here.", path="dir")

    def __post_init__(self):
        self.checkpoints, self.heads = tuple(self.checkpoints), tuple(self.heads)
        super().__post_init__()


def load_trained_head(path, device):
    """(head in eval mode, checkpoint state with "provenance" = what the cache it scores must record)."""
    state = load_checkpoint(path, map_location=device)
    head = build_head(state["head"], **state["head_config"]).to(device)
    load_module_state(head, state["model"], path)
    return head.eval(), {**state, "provenance": features_provenance(state, path)}


def _label(name, taken):
    label, n = name, 2
    while label in taken:
        label, n = f"{name}#{n}", n + 1
    return label


def build_heads(config, device, feature_dim, num_frames):
    """[(label, head, checkpoint state or None)] in the order asked for."""
    heads = []
    for path in config.checkpoints:
        head, state = load_trained_head(path, device)
        heads.append((_label(f"{state['head']} ({os.path.basename(os.path.dirname(os.path.abspath(path)))})",
                             {h[0] for h in heads}), head, state))
    for name in config.heads:
        head = build_head(name, feature_dim=feature_dim, num_frames=num_frames, **config.head_options.get(name, {}))
        if head.trainable:
            raise ConfigError(f"--head {name}: it has parameters; train it with `m3net train-head` and pass "
                              "--checkpoint")
        heads.append((_label(name, {h[0] for h in heads}), head.to(device).eval(), None))
    return heads


def _cache_path(config):
    if config.cache:
        return config.cache
    if not config.checkpoints:
        raise ConfigError("--cache is required when no --checkpoint names one")
    first = config.checkpoints[0]
    cache_path = load_checkpoint(first)["train_config"].get("cache")
    if cache_path is None:
        raise ConfigError(f"--checkpoint {first} is a finetune checkpoint: pass --cache, a cache built with "
                          f"`m3net extract --weights {first}`")
    return cache_path


def _check_checkpoints(config, cache_path, info, heads):
    """Every trained head scores only features like those it was trained on, from the kind of cache it was trained
    on (checked before any feature is read). ``heads`` begins with the checkpoints' heads, in their order."""
    source = f"--cache {cache_path}"
    if not config.cache:  # _cache_path took the first checkpoint's
        source = f"{cache_path} (the cache {config.checkpoints[0]} was trained on)"
    for path, (_, _, state) in zip(config.checkpoints, heads):
        check_features(state, f"--checkpoint {path}", info["feature_shape"][1:], source, info["attrs"])


def _writable_out(out):
    """Fail before hours of scoring, not after."""
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"--out {out}: cannot create the folder ({err.strerror})") from None
    if not os.access(out, os.W_OK):
        raise ConfigError(f"--out {out}: the folder is not writable")


@torch.no_grad()
def evaluate(config, progress=True):
    device = resolve_device(config.device)
    if not config.checkpoints and not config.heads:
        raise ConfigError("nothing to evaluate: give --checkpoint and/or --head")
    if config.out:
        _writable_out(config.out)
    cache_path = _cache_path(config)
    info = cache_info(cache_path)
    num_frames, feature_dim = info["attrs"]["num_frames"], info["feature_shape"][-1]
    heads = build_heads(config, device, feature_dim, num_frames)
    _check_checkpoints(config, cache_path, info, heads)
    # One input for every head: the trained heads' own normalisation (and statistics), or the cache's.
    norm = input_norm_for(config.input_norm, [(label, state) for label, _, state in heads if state is not None],
                          cache_path)
    pools = {head.input_pool() for _, head, _ in heads}
    pool = pools.pop() if config.pool_on_load and len(pools) == 1 else None  # only when every head pools alike
    cached, bank, where = open_bank(cache_path, (config.split,), device, config.resident, config.memory_limit, pool,
                                    prefetch=config.prefetch, norm=norm)
    try:
        logger.info(where)
        summary = _score(config, cache_path, cached, bank, heads, progress)
    finally:
        bank.close()
    summary["input_norm"] = norm.describe()
    return summary


def _score(config, cache_path, cached, bank, heads, progress):
    sampler = EpisodeSampler(cached.labels, cached.split, config.split, config.way, config.shot, config.queries,
                             seed=config.seed, class_names=cached.classes)
    per_episode = {label: {} for label, _, _ in heads}  # label -> view -> [accuracy per episode]
    # Where the queries of each split class go (paper Fig. 6): label -> view -> (K, K) counts.
    split_classes = sampler.classes
    compact = {int(c): i for i, c in enumerate(split_classes)}
    confusion = {label: {} for label, _, _ in heads}
    bank.prefetch(sampler, 0, config.episodes)
    for index in progress_bar(range(config.episodes), enabled=progress, desc="evaluate", unit="ep"):
        episode = sampler.episode(index)
        support, support_labels, query, query_labels = bank.episode(episode)
        true_ids = [compact[int(c)] for c in episode.classes[episode.query_labels]]
        for label, head, _ in heads:
            outputs = head(support, support_labels, query)
            bad = [view for view, logits in outputs.items() if not torch.isfinite(logits).all()]
            if bad:
                raise NonFiniteError(f"{label}: non-finite {', '.join(bad)} logits in {config.split} episode "
                                     f"{index}; no result is reported (check the checkpoint and the cache)")
            for view, acc in episode_accuracies(outputs, query_labels).items():
                per_episode[label].setdefault(view, []).append(acc)
                counts = confusion[label].setdefault(view, np.zeros((len(split_classes),) * 2, dtype=np.int64))
                predicted = episode.classes[outputs[view].argmax(dim=-1).cpu().numpy()]
                np.add.at(counts, (true_ids, [compact[int(c)] for c in predicted]), 1)
    summary = summarize(config, cache_path, cached, heads, per_episode)
    summary["confusion_classes"] = [cached.classes[c] for c in split_classes]
    summary["confusion"] = {label: {v: m.tolist() for v, m in views.items()} for label, views in confusion.items()}
    return summary


def summarize(config, cache_path, cached, heads, per_episode):
    rows = []
    for label, views in per_episode.items():
        for view, accs in sorted(views.items(), key=lambda kv: (kv[0] == "y", kv[0])):
            mean, ci = mean_and_ci(accs)
            rows.append({"head": label, "view": view, "accuracy": mean, "ci95": ci, "episodes": len(accs),
                         "scored_queries": len(accs) * config.way * config.queries})
    paired = []
    labels = list(per_episode)
    for other in labels[1:]:
        diff = np.asarray(per_episode[other]["y"]) - np.asarray(per_episode[labels[0]]["y"])
        mean, ci = mean_and_ci(diff)
        paired.append({"head": other, "minus": labels[0], "difference": mean, "ci95": ci})
    return {
        "config": {**dataclasses.asdict(config), "cache": os.path.abspath(cache_path)},
        "cache_provenance": cached.provenance(),
        "task": f"{config.way}-way {config.shot}-shot, {config.queries} queries/class, {config.episodes} "
                f"{config.split} episodes, seed {config.seed}",
        "results": rows,
        "paired": paired,
        "per_episode_y": {label: views["y"] for label, views in per_episode.items()},
    }


def format_table(summary):
    norm = summary.get("input_norm", {}).get("input_norm", "none")
    task = summary["task"] + ("" if norm == "none" else f", --input-norm {norm} for every head")
    lines = [task, f"{'head':<28} {'view':<7} {'accuracy (%)':>18}"]
    lines.append("-" * len(lines[-1]))
    for r in summary["results"]:
        lines.append(f"{r['head']:<28} {r['view']:<7} {r['accuracy']:>10.2f} ± {r['ci95']:<5.2f}"
                     f"  ({r['scored_queries']} queries)")
    for p in summary["paired"]:
        lines.append(f"paired: {p['head']} − {p['minus']} = {p['difference']:+.2f} ± {p['ci95']:.2f} points")
    return "\n".join(lines)


def write_summary(summary, out):
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "results.json"), "w") as fh:
        json.dump(summary, fh, indent=2)
    with open(os.path.join(out, "results.csv"), "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["head", "view", "accuracy", "ci95", "episodes", "scored_queries"])
        writer.writeheader()
        writer.writerows(summary["results"])
    return os.path.join(out, "results.json"), os.path.join(out, "results.csv")
