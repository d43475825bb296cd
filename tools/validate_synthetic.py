"""Checks that the generated benchmark does what it is for, with a random-weight ResNet-50:

(a) sub-action types (and their variants) separate in globally pooled features of single frames
    under nuisance: leave-one-out 1-NN accuracy (cosine);
(b) on a generated split, in seeded N-way K-shot episodes: a mean-pooled prototype (near
    chance: it cannot separate the order-only pairs), the diagonal match (fixed frame-by-frame
    cosine: frame t of the query against frame t of the support) and hard DTW on the cosine cost.
    With tempo variation within a class (SyntheticConfig.tempo) frame t of two clips of one class
    shows different phases, so the diagonal match falls behind DTW.

    python tools/validate_synthetic.py --out DIR [--seeds 0,1,2] [--tempo T] [--split test] [--episodes 2000]

Targets (checked and printed at the end; exit status 1 if one fails): mean pooling at 5-way 1-shot
within 0.15 of chance; the diagonal match at least 0.10 below hard DTW at 5-way 1-shot;
single-frame sub-action types at 0.9 or above. With several --seeds (one benchmark each, as the demo's
seeds are) they are judged on the mean over the seeds and reported per seed as well.

Self-contained on purpose (own feature path and matchers, not the model package's), so it
checks the data, not the code that is tested on it. Per-frame features: frame resized to
224x224, ImageNet mean/std, trunk, mean over the 7x7 map.
"""
import argparse
import json
import logging
import os
import sys
import warnings
from dataclasses import fields

import numpy as np
import torch
import torch.nn.functional as F

from m3net.config import parse_seeds
from m3net.data.synthetic import (
    SUBACTIONS,
    VARIANTS,
    SyntheticConfig,
    generate_synthetic,
    random_clip_params,
    render_background,
    render_frame,
)
from m3net.errors import ConfigError
from m3net.extract.backbone import build_backbone
from m3net.runtime import git_sha, versions

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def random_backbone(seed=0):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the "random weights" warning is the point here
        model, _ = build_backbone("random", seed=seed)
    return model


@torch.no_grad()
def pooled_features(model, frames, batch=16):
    """(N, H, W, 3) uint8 -> (N, 2048) globally pooled trunk features."""
    out = []
    for start in range(0, len(frames), batch):
        x = torch.from_numpy(np.ascontiguousarray(frames[start:start + batch])).permute(0, 3, 1, 2).float() / 255
        x = F.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False)
        out.append(model((x - MEAN) / STD).mean(dim=(2, 3)))
    return torch.cat(out).numpy()


def loo_1nn(features, labels):
    """Leave-one-out 1-NN accuracy under cosine similarity."""
    z = features / np.linalg.norm(features, axis=1, keepdims=True)
    sim = z @ z.T
    np.fill_diagonal(sim, -np.inf)
    return float(np.mean(labels[sim.argmax(1)] == labels))


def subaction_separability(model, per_variant=20, size=128, phases=4, seed=0):
    """1-NN accuracy of the sub-action types, and of the two variants within each type."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 2]))
    frames, types, variants = [], [], []
    for t, kind in enumerate(SUBACTIONS):
        for v, variant in enumerate(VARIANTS):
            for _ in range(per_variant):
                params = random_clip_params(rng, phases)
                noise_rng = np.random.default_rng(params["noise_seed"])
                step = [kind.name, variant]
                frames.append(render_frame(render_background(params, size), step, rng.uniform(), params, noise_rng))
                types.append(t)
                variants.append(v)
    feats = pooled_features(model, np.stack(frames))
    types, variants = np.array(types), np.array(variants)
    per_type_variant = [loo_1nn(feats[types == t], variants[types == t]) for t in range(len(SUBACTIONS))]
    return {
        "type_1nn": loo_1nn(feats, types),
        "type_chance": 1 / len(SUBACTIONS),
        "variant_1nn": float(np.mean(per_type_variant)),
        "variant_1nn_per_type": dict(zip((k.name for k in SUBACTIONS), per_type_variant)),
        "frames": len(frames),
    }


def centre_indices(length, t):
    """Centre frame of each of t equal segments (the test-time sampling of docs/design.md)."""
    return [min(int((k + 0.5) * length / t), length - 1) for k in range(t)]


def clip_features(model, out, manifest, split, t=8):
    """(V, t, 2048) per-frame pooled features and (V,) class indices of a split's clips."""
    import av

    from m3net.progress import progress_bar

    classes = manifest["splits"][split]
    feats, labels = [], []
    entries = [c for c in manifest["clips"] if c["split"] == split]
    for entry in progress_bar(entries, desc=f"features {split}", unit="clip"):
        with av.open(os.path.join(out, entry["path"])) as container:
            frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
        feats.append(pooled_features(model, frames[centre_indices(len(frames), t)]))
        labels.append(classes.index(entry["class"]))
    return np.stack(feats), np.array(labels)


def hard_dtw(cost):
    """Classic DTW value of a (T, T) cost (diagonal, down, right predecessors)."""
    n, m = cost.shape
    acc = np.full((n + 1, m + 1), np.inf)
    acc[0, 0] = 0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            acc[i, j] = cost[i - 1, j - 1] + min(acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1])
    return acc[n, m]


def _scores(query, supports, method):
    """Similarity of one query (T, D) to K supports (K, T, D) of a class, averaged over K."""
    if method == "prototype":
        proto = supports.mean(axis=(0, 1))
        q = query.mean(0)
        return float(q @ proto / np.linalg.norm(q) / np.linalg.norm(proto))
    qn = query / np.linalg.norm(query, axis=1, keepdims=True)
    sn = supports / np.linalg.norm(supports, axis=2, keepdims=True)
    cos = np.einsum("td,ksd->kts", qn, sn)  # (K, T, T)
    if method == "diagonal":
        return float(np.mean(np.diagonal(cos, axis1=1, axis2=2)))
    if method == "dtw":
        return -float(np.mean([hard_dtw(1 - c) for c in cos]))
    raise ValueError(method)


METHODS = ("prototype", "diagonal", "dtw")


def episode_accuracy(feats, labels, ways=5, shots=1, queries=1, episodes=2000, seed=0, class_pool=None):
    """Mean accuracy per method over seeded episodes drawn from ``class_pool`` (default all)."""
    rng = np.random.default_rng(seed)
    pool = np.unique(labels) if class_pool is None else np.asarray(class_pool)
    by_class = {c: np.flatnonzero(labels == c) for c in pool}
    correct = {m: 0 for m in METHODS}
    total = 0
    for _ in range(episodes):
        chosen = rng.choice(pool, ways, replace=False)
        picks = [rng.choice(by_class[c], shots + queries, replace=False) for c in chosen]
        for true, pick in enumerate(picks):
            for q in pick[shots:]:
                total += 1
                for m in METHODS:
                    scores = [_scores(feats[q], feats[p[:shots]], m) for p in picks]
                    correct[m] += int(np.argmax(scores) == true)
    return {m: correct[m] / total for m in METHODS}


TARGETS = {  # (what, holds) on the results of main()
    "mean pooling near chance (5-way 1-shot, within 0.15)":
        lambda r: r["5way_1shot"]["prototype"] <= 0.2 + 0.15,
    "diagonal at least 0.10 below hard DTW (5-way 1-shot)":
        lambda r: r["5way_1shot"]["diagonal"] <= r["5way_1shot"]["dtw"] - 0.10,
    "single-frame sub-action types >= 0.9":
        lambda r: r["subactions"]["type_1nn"] >= 0.9,
}


def check_targets(results):
    """{target: True/False} for the targets above (None where the run has no 5-way episodes)."""
    return {name: (holds(results) if "5way_1shot" in results else None) for name, holds in TARGETS.items()}


def validate_benchmark(model, out, asked, split="test", episodes=2000, per_variant=20):
    """The checks (a) and (b) on the benchmark in ``out`` (generated there with ``asked`` if absent)."""
    manifest, _ = generate_synthetic(out, SyntheticConfig(**{**asked, **_config_of(out)}))
    config = SyntheticConfig(**manifest["config"])
    results = {"config": manifest["config"], "generator_version": manifest.get("generator_version")}
    results["subactions"] = subaction_separability(model, per_variant, config.size, config.phases, config.seed)
    print(f"(a) seed {config.seed} sub-action types, LOO 1-NN:", json.dumps(results["subactions"], indent=1))
    feats, labels = clip_features(model, out, manifest, split)
    names = manifest["splits"][split]
    for shots in (1, 5):
        key = f"{min(5, len(names))}way_{shots}shot"
        if config.clips_per_class > shots:
            results[key] = episode_accuracy(feats, labels, ways=min(5, len(names)), shots=shots, episodes=episodes)
            print(f"(b) seed {config.seed} {split} {key}:", results[key])
    pair_acc = {m: [] for m in METHODS}
    for a, b in manifest["order_only_pairs"][split]:
        acc = episode_accuracy(feats, labels, ways=2, shots=1, episodes=max(1, episodes // 10),
                               class_pool=[names.index(a), names.index(b)])
        for m in METHODS:
            pair_acc[m].append(acc[m])
    results["order_only_pairs_2way_1shot"] = {m: float(np.mean(v)) for m, v in pair_acc.items() if v}
    print(f"(b) seed {config.seed} {split} order-only pairs, 2-way 1-shot:", results["order_only_pairs_2way_1shot"])
    return results


EPISODE_KEYS = ("5way_1shot", "5way_5shot", "order_only_pairs_2way_1shot")


def over_seeds(per_seed):
    """The mean over the benchmark seeds of every accuracy in ``per_seed`` ({seed: validate_benchmark()}),
    in the layout of one seed's results; the targets are judged on these means (the demo's record, too, is a
    mean over the benchmarks of its seeds)."""
    runs = list(per_seed.values())
    mean = {"subactions": {key: float(np.mean([r["subactions"][key] for r in runs]))
                           for key in ("type_1nn", "type_chance", "variant_1nn")}}
    for key in EPISODE_KEYS:
        if all(key in r for r in runs):
            mean[key] = {m: float(np.mean([r[key][m] for r in runs])) for m in runs[0][key]}
    return mean


def seeds_option(text):
    """argparse's type for --seeds: m3net.config.parse_seeds, its refusal as argparse's usage error."""
    try:
        return list(parse_seeds(text))
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def main(argv=None):
    tempo = next(f for f in fields(SyntheticConfig) if f.name == "tempo")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder of the benchmarks: OUT/seed-<seed> each (generated "
                        "with the defaults where absent; the demo's <out>/seed-<seed>/synthetic folders can be linked)")
    parser.add_argument("--seeds", type=seeds_option, default=[0],
                        help="comma-separated seeds of the benchmarks (default 0); targets judged on the mean")
    parser.add_argument("--tempo", type=float, default=tempo.default,
                        help="tempo of a benchmark generated here: " + tempo.metadata["help"].replace("%", "%%"))
    parser.add_argument("--split", default="test")
    parser.add_argument("--episodes", type=int, default=2000)
    parser.add_argument("--per-variant", type=int, default=20, help="frames per (type, variant) in check (a)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="also write the numbers here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # progress lines of m3net.progress
    torch.set_num_threads(args.threads)
    code_version = git_sha()  # of the code that runs, before a long run
    model = random_backbone(seed=0)
    per_seed = {str(seed): validate_benchmark(model, os.path.join(args.out, f"seed-{seed}"),
                                              {"seed": seed, "tempo": args.tempo}, args.split, args.episodes,
                                              args.per_variant)
                for seed in args.seeds}
    first = next(iter(per_seed.values()))
    given = sys.argv[1:] if argv is None else argv
    results = {"config": {k: v for k, v in first["config"].items() if k != "seed"}, "seeds": args.seeds,
               "split": args.split, "episodes": args.episodes,
               "command": " ".join(["python tools/validate_synthetic.py", *given]),
               "code_version": code_version, "versions": versions(),
               "generator_version": first["generator_version"], **over_seeds(per_seed), "per_seed": per_seed}
    results["targets"] = check_targets(results)
    results["targets_per_seed"] = {seed: check_targets(r) for seed, r in per_seed.items()}
    for name, holds in results["targets"].items():
        held = sum(bool(r[name]) for r in results["targets_per_seed"].values())
        print(f"target {'n/a ' if holds is None else 'ok  ' if holds else 'FAIL'} {name} "
              f"(mean of {len(per_seed)} seed(s); held in {held})")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)
    return 1 if False in results["targets"].values() else 0


def _config_of(out):
    """The config of an existing benchmark in ``out``, or the defaults for a new one."""
    path = os.path.join(out, "manifest.json")
    if os.path.isfile(path):
        with open(path) as fh:
            return json.load(fh)["config"]
    return {}


if __name__ == "__main__":
    raise SystemExit(main())
