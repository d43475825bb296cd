"""Pictures of a results folder (PNG, matplotlib): what the paper shows, for our runs.

    accuracy.png        accuracy ± 95% CI per view (Y1, Y2, Y3, Y) and per head
    accuracy_vs_shot.png  the fused accuracy per head against K, when shot-K/results.json
                        folders beside results.json hold other shots of the same heads
    predictions.png     where the queries of each test class go, per view (paper Fig. 6)
    training.png        training loss and validation accuracy over episodes
    alignment.png       a query M3Net gets right and OTAM wrong (with the run's checkpoint): the cosine
                        cost and DTW path against its true class and OTAM's choice, for OTAM's pooled
                        frames and M3Net's I-M features; else the query's best support
    activations.png     that query's per-patch activation maps after the backbone, + IFCE, + IVCE and + IECE of
                        the run's M3Net head (paper Fig. 5), over its frames when the clips are given;
                        the backbone row alone without an m3net checkpoint

``m3net report DIR`` redraws them from DIR/results.json (and the run folder / cache it names).
"""
import csv
import json
import math
import os

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from m3net.paper import VIEW_NAMES  # noqa: E402

READ_AHEAD = 2  # episodes the report reads ahead while it searches them (each held in memory)


def plot_accuracy(summary, path):
    rows = summary["results"]
    heads = list(dict.fromkeys(r["head"] for r in rows))
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(rows)), 4))
    labels, means, cis, colours = [], [], [], []
    palette = plt.get_cmap("tab10")
    for i, head in enumerate(heads):
        for r in (r for r in rows if r["head"] == head):
            labels.append(f"{head}\n{VIEW_NAMES.get(r['view'], r['view'])}")
            means.append(r["accuracy"])
            cis.append(r["ci95"])
            colours.append(palette(i % 10))
    x = np.arange(len(labels))
    ax.bar(x, means, yerr=cis, capsize=4, color=colours)
    for xi, m in zip(x, means):
        ax.text(xi, m + 1, f"{m:.1f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_ylabel("accuracy (%) ± 95% CI")
    ax.set_ylim(0, 105)
    ax.set_title(summary["task"], fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_accuracy_vs_shot(summaries, path):
    """summaries: evaluation summaries of different shots; one line (Y ± CI) per head."""
    by_head = {}
    for summary in sorted(summaries, key=lambda s: s["config"]["shot"]):
        for r in summary["results"]:
            if r["view"] == "y":
                by_head.setdefault(r["head"], []).append((summary["config"]["shot"], r["accuracy"], r["ci95"]))
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for head, points in by_head.items():
        shots, accs, cis = zip(*points)
        ax.errorbar(shots, accs, yerr=cis, marker="o", capsize=3, label=head)
    ax.set_xlabel("shots per class (K)")
    ax.set_ylabel("accuracy (%) ± 95% CI")
    ax.set_xticks(sorted({s["config"]["shot"] for s in summaries}))
    ax.set_title(f"{summaries[0]['config']['way']}-way accuracy (Y) against K", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_predictions(summary, head, path):
    views = summary["confusion"][head]
    classes = summary["confusion_classes"]
    fig, axes = plt.subplots(1, len(views), figsize=(3.6 * len(views) + 0.8, 3.8), squeeze=False,
                             layout="constrained")
    for ax, (view, counts) in zip(axes[0], sorted(views.items(), key=lambda kv: (kv[0] == "y", kv[0]))):
        counts = np.asarray(counts, dtype=float)
        share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        image = ax.imshow(share, cmap="viridis", vmin=0, vmax=1)
        ax.set_title(VIEW_NAMES.get(view, view), fontsize=9)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ticks = np.arange(len(classes))
        ax.set_xticks(ticks, [str(i) for i in ticks], fontsize=7)
        ax.set_yticks(ticks, [str(i) for i in ticks], fontsize=7)
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="share of the true class's queries")
    fig.suptitle(f"{head}: share of each test class's queries per predicted class", fontsize=9)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _episodes(row):
    """A log row's episode count (logs written before the episodes column have "step")."""
    return int(row["episodes"] if "episodes" in row else row["step"])


def plot_training(run_dir, path):
    train = _read_csv(os.path.join(run_dir, "train_log.csv"))
    val_path = os.path.join(run_dir, "val_log.csv")
    val = _read_csv(val_path) if os.path.exists(val_path) else []
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(9, 3.5))
    steps = [_episodes(r) for r in train]
    ax_loss.plot(steps, [float(r["loss"]) for r in train], label="total")
    per_view = {}
    for r in train:
        for item in filter(None, r["views_loss"].split(" ")):
            view, value = item.split("=")
            per_view.setdefault(view, []).append(float(value))
    for view, values in per_view.items():
        if len(per_view) > 1:
            ax_loss.plot(steps, values, label=VIEW_NAMES.get(view, view), linewidth=1)
    ax_loss.set_xlabel("episode")
    ax_loss.set_ylabel("cross-entropy")
    ax_loss.legend(fontsize=7)
    ax_loss.set_title("training loss", fontsize=9)
    if val:
        ax_val.errorbar([_episodes(r) for r in val], [float(r["val_acc"]) for r in val],
                        yerr=[float(r["val_ci"]) for r in val], marker="o", capsize=3)
    ax_val.set_xlabel("episode")
    ax_val.set_ylabel("val accuracy (%)")
    ax_val.set_title("validation (Y)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _pooled(clip):
    return torch.as_tensor(np.asarray(clip, dtype=np.float32)).mean(dim=(1, 2))  # (T, C)


def plot_alignment(panels, title, path):
    """One cosine-cost matrix per panel, [(title, cost (T, T))], each with its hard-DTW path and
    the mean cost along that path (what I-M scores), on one shared colour scale per row."""
    from m3net.kernels import dtw_path

    columns = min(len(panels), 2)
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.8 * rows), squeeze=False)
    for ax, (label, cost) in zip(axes.flat, panels):
        cost = torch.as_tensor(cost, dtype=torch.float32)
        mask = dtw_path(cost[None])[0]
        image = ax.imshow(cost.numpy(), cmap="magma_r")
        ii, jj = np.nonzero(mask.numpy())
        ax.plot(jj, ii, "c-o", markersize=3, linewidth=1.2)
        ax.set_title(f"{label}\nmean cost on the DTW path {float(cost[mask].mean()):.3g}", fontsize=8)
        ax.set_xlabel("support frame", fontsize=7)
        ax.set_ylabel("query frame", fontsize=7)
        fig.colorbar(image, ax=ax, fraction=0.046)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def best_support_panel(cached, bank, episode, query_index=0):
    """[(title, cost)] for the support whose hard-DTW cost to the episode's query (pooled cached frames) is lowest."""
    from m3net.kernels import cosine_cost, dtw

    support, _, query, _ = bank.episode(episode)
    q = _pooled(query[query_index])
    costs = torch.stack([cosine_cost(q[None], _pooled(clip)[None])[0] for clip in support])
    best = int(dtw(costs, mode="hard").argmin())
    ids = (cached.video_ids[int(episode.query_rows[query_index])], cached.video_ids[int(episode.support_rows[best])])
    return [(f"query {ids[0]} vs its best support {ids[1]}", costs[best])]


@torch.no_grad()
def contrast_query(head, baseline, bank, sampler, max_episodes=300):
    """The first query of the sampler's episodes that ``head``'s Y classifies right and ``baseline``
    wrong: (episode, query index, baseline's class label), or None within ``max_episodes``."""
    bank.prefetch(sampler, 0, max_episodes)
    for index in range(max_episodes):
        episode = sampler.episode(index)
        support, support_labels, query, query_labels = bank.episode(episode)
        mine = head(support, support_labels, query)["y"].argmax(dim=-1)
        theirs = baseline(support, support_labels, query)["y"].argmax(dim=-1)
        hits = torch.nonzero((mine == query_labels) & (theirs != query_labels)).flatten()
        if len(hits):
            i = int(hits[0])
            return episode, i, int(theirs[i])
    return None


@torch.no_grad()
def contrast_panels(head, cached, bank, episode, query_index, wrong_label):
    """OTAM's cost (pooled cached frames) and M3Net's I-M cost (its learned frame features) between
    the query and the first support of its true class, then of the class OTAM chose."""
    from m3net.kernels import cosine_cost

    support, _, query, _ = bank.episode(episode)
    encoder = head.config.im_features[0]  # the (first) encoder feeding I-M
    support_im, query_im = head.matcher_inputs(support, query)[encoder]  # (G, S, T, d), (Q, T, d)
    support_im = support_im[query_index if support_im.shape[0] > 1 else 0]
    true_label = int(episode.query_labels[query_index])
    raw_query = query[query_index].float().mean(dim=(1, 2))  # (T, C)
    panels = []
    for method, q, frames_of in (("OTAM", raw_query, lambda j: support[j].float().mean(dim=(1, 2))),
                                 ("M3Net I-M", query_im[query_index], lambda j: support_im[j])):
        for label, verdict in ((true_label, "true class"), (wrong_label, "OTAM's (wrong) choice")):
            j = int(np.flatnonzero(episode.support_labels == label)[0])
            name = cached.classes[episode.classes[label]]
            panels.append((f"{method}: vs {name} ({verdict})", cosine_cost(q[None], frames_of(j)[None])[0]))
    return panels


STAGE_ROWS = {"backbone": "backbone\n(cached map)", "ifce": "+ IFCE", "ivce": "+ IVCE", "iece": "+ IECE"}


def _contributions(energy, captured, index):
    """Σ_c z·∂energy/∂z over the channels of clip ``index``'s tokens z (T, ..., C), the clips being the
    rows of the ``captured`` tensors in order: (T, ...) per-token contributions."""
    for tokens in captured:
        if index < tokens.shape[0]:
            (grad,) = torch.autograd.grad(energy, tokens, retain_graph=True)
            return (tokens[index] * grad[index]).sum(dim=-1).detach()
        index -= tokens.shape[0]
    raise IndexError("clip index beyond the captured tokens")


def _as_maps(contributions):
    """(T, P) patch contributions or (T, h, w) map contributions -> (T, h, w), P = n·n patches."""
    if contributions.dim() == 2:
        side = math.isqrt(contributions.shape[1])
        return contributions.reshape(-1, side, side)
    return contributions


def _frame_energy(frames):
    return frames.pow(2).sum() / 2  # ½ Σ_t ‖f_t‖²


def backbone_map(clip):
    """The backbone row of :func:`stage_activation_maps` from a cached clip (T, H, W, C): (T, H, W)."""
    clips = torch.as_tensor(clip)[None]  # (1, T, H, W, C)
    clips = clips.to(torch.promote_types(clips.dtype, torch.float32)).requires_grad_()  # the cache's float16: float32
    with torch.enable_grad():
        return _contributions(_frame_energy(clips[0].mean(dim=(1, 2))), [clips], 0).numpy()


def stage_activation_maps(head, support, query, query_index):
    """Per-patch activation maps of query ``query_index`` at each stage of an M3Net head (paper Fig. 5).

    support (S, T, H, W, C) and query (Q, T, H, W, C): one episode's cached maps (the query's IECE
    context is its episode). Returns {"backbone", "ifce", "ivce", "iece": (T, h, w) map, or None for
    an encoder the head does not have (switched off, or read by no matcher)}; h = w = n with IFCE,
    else the cache's H, W.

    A stage's map is how much each spatial token z_p of frame t contributes to the stage's frame
    features f: gradient x activation of the energy ½ Σ_t ‖f_t‖², map(t, p) = Σ_c z_tpc ∂E/∂z_tpc
    (a first-order Taylor share of E per token), where
      - backbone: z = the cached H x W map, f_t = its spatial mean;
      - IFCE: z = IFCE's n x n patch tokens, f_t = their mean (the frame feature I-M compares);
      - IVCE: z = IFCE's patch tokens (the cached H x W map when IFCE is off: the gradient then
        runs back through the head's input_norm and projection), f = IVCE's frame features of
        the query;
      - IECE: z = the same patch tokens, f = IECE's task-specific frame features of the query in
        its episode (as the head computes them: IECE reads IFCE's frames, in parallel with IVCE).
    For a spatial mean the map is ⟨z_p, f_t⟩ / P, the patch's projection on its frame feature, so
    all rows share one definition, and for IVCE / IECE it follows the patch through the stage's
    mixing and gating: a patch lights up when what the stage keeps of the frame points its way.
    Why not a channel norm: it is blind to the stage (the head's later stages would all show the
    same patch norms); why not class-score Grad-CAM: it mixes the matchers and supports into a
    picture meant to show the encoders.

    IFCE's tokens are caught with a forward hook on ``head.ifce``; the features come from the
    head's own ``matcher_inputs``, so the maps follow whatever the head computes.
    """
    from m3net.errors import ConfigError
    from m3net.model.m3net_head import M3Net

    if not isinstance(head, M3Net):
        raise ConfigError(f"activation maps per stage need an m3net head, not {head.name!r} (it has no IFCE, "
                          "IVCE or IECE)")
    was_training = head.training
    head.eval()  # input_norm must not count these maps into its training statistics
    captured = []

    def catch(module, args, output):  # the tokens become leaves: the gradients stop there
        captured.append(output.detach().requires_grad_())
        return captured[-1]

    support, query = (x.requires_grad_(head.ifce is None) for x in head.cast(support.detach(), query.detach()))
    index = support.shape[0] + query_index  # the query's row among support + query
    maps = {"backbone": backbone_map(query[query_index].detach())}
    hook = head.ifce.register_forward_hook(catch) if head.ifce is not None else None
    try:
        with torch.enable_grad():
            if hook is None:
                captured += [support, query]
            features = head.matcher_inputs(support, query)  # {encoder: (support, query (Q, T, d))}
            for stage in ("ifce", "ivce", "iece"):
                if getattr(head, stage) is None:
                    maps[stage] = None
                    continue
                if stage == "ifce":  # the hook caught IFCE's tokens of every clip: (S+Q, T, P, d)
                    frames = captured[0][index].mean(dim=1)  # (T, d)
                else:
                    frames = features[stage][1][query_index]  # (T, d)
                maps[stage] = _as_maps(_contributions(_frame_energy(frames), captured, index)).numpy()
    finally:
        if hook is not None:
            hook.remove()
        head.train(was_training)
    return maps


def plot_stage_activations(frames, maps, title, path):
    """A grid: the clip's frames (when ``frames`` (T, H, W, 3) uint8 is given), then one row per stage
    of ``maps`` ({stage: (T, h, w) or None}, from stage_activation_maps) with the map upsampled over
    each frame, or drawn alone without frames; None draws an "off" row. Each row is scaled to its own
    range (the stages' energies differ in scale); colours compare patches and frames within a row."""
    t = next(m.shape[0] for m in maps.values() if m is not None)
    rows = [("frames", None)] * (frames is not None) + list(maps.items())
    fig, axes = plt.subplots(len(rows), t, figsize=(1.5 * t + 0.9, 1.55 * len(rows) + 0.4), squeeze=False)
    for axes_row, (stage, stage_maps) in zip(axes, rows):
        axes_row[0].set_ylabel(STAGE_ROWS.get(stage, stage), fontsize=7)
        if stage_maps is not None:
            low, high = float(stage_maps.min()), float(stage_maps.max())
            scale = (stage_maps - low) / (high - low if high > low else 1.0)
        for k, ax in enumerate(axes_row):
            ax.set_xticks([])
            ax.set_yticks([])
            if stage == "frames":
                ax.imshow(frames[k])
                ax.set_title(f"frame {k + 1}", fontsize=7)
            elif stage_maps is None:
                ax.text(0.5, 0.5, "off", ha="center", va="center", fontsize=9, transform=ax.transAxes)
            elif frames is None:
                ax.imshow(scale[k], cmap="jet", vmin=0, vmax=1)
            else:
                heat = torch.nn.functional.interpolate(torch.as_tensor(scale[k])[None, None], size=frames[k].shape[:2],
                                                       mode="bilinear", align_corners=False)[0, 0].numpy()
                ax.imshow(frames[k])
                ax.imshow(heat, cmap="jet", alpha=0.5, vmin=0, vmax=1)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _query_frames(clips_root, attrs, clip_id):
    """The test-view frames (T, crop, crop, 3) uint8 the backbone saw of ``clip_id``, found under ``clips_root`` as
    the cache's dataset lays clips out (a listed dataset's --root: gym99, gym288, diving48; a generated benchmark;
    else a folder dataset), or None when the clip is not there."""
    from m3net.data.datasets import FOLDER_DATASETS, LISTED_DATASETS, load_dataset
    from m3net.extract.sampling import sample_indices
    from m3net.extract.transforms import TransformConfig, test_view
    from m3net.extract.video import decode_frames, num_frames

    name = attrs.get("dataset")
    dataset = load_dataset(name if name in LISTED_DATASETS or name in FOLDER_DATASETS[1:] else "folder", clips_root)
    video = next((c.path for c in dataset.clips if c.clip_id == clip_id), None)
    if not video:
        return None
    frames = decode_frames(video, sample_indices(num_frames(video), int(attrs["num_frames"])))  # (T, H, W, 3) uint8
    transform = TransformConfig(resize=tuple(attrs["resize"]), crop=int(attrs["crop"]))
    return test_view(frames, transform).permute(0, 2, 3, 1).numpy()  # what the backbone saw


def evaluated_input_norm(summary):
    """The InputNorm the evaluation of ``summary`` read the cache through (None: none), as evaluate chose it:
    its checkpoints' own, else the cache's statistics."""
    from m3net.train.checkpoint import load_checkpoint
    from m3net.train.features import input_norm_for

    kind = summary.get("input_norm", {}).get("input_norm", "none")
    if kind == "none":
        return None
    cfg = summary["config"]
    return input_norm_for(kind, [(path, load_checkpoint(path)) for path in cfg["checkpoints"]], cfg["cache"])


def draw_report(results_dir, run_dir=None, clips_root=None):
    """Draws every picture whose inputs exist; returns the list of written PNG paths."""
    from m3net.cache import RowReader, load_cache
    from m3net.data.episodes import EpisodeSampler
    from m3net.train.features import FeatureBank

    with open(os.path.join(results_dir, "results.json")) as fh:
        summary = json.load(fh)
    written = []

    def out(name):
        written.append(os.path.join(results_dir, name))
        return written[-1]

    cfg = summary["config"]
    # The split's labels and ids only; the features of the episodes drawn are read from the file as they are drawn,
    # so memory is bounded by those episodes, not by the split (a Gym99 test split holds ~21 GB).
    cached = load_cache(cfg["cache"], splits=(cfg["split"],), features=False)
    head = _run_head(run_dir, cached, results_dir)  # refused before anything is drawn or read
    plot_accuracy(summary, out("accuracy.png"))
    others = []
    for name in sorted(os.listdir(results_dir)):
        other = os.path.join(results_dir, name, "results.json")
        if name.startswith("shot-") and os.path.isfile(other):
            with open(other) as fh:
                others.append(json.load(fh))
    if others:
        plot_accuracy_vs_shot([summary] + others, out("accuracy_vs_shot.png"))
    first = summary["results"][0]["head"]
    if summary.get("confusion"):
        plot_predictions(summary, first, out("predictions.png"))
    if run_dir and os.path.exists(os.path.join(run_dir, "train_log.csv")):
        plot_training(run_dir, out("training.png"))
    sampler = EpisodeSampler(cached.labels, cached.split, cfg["split"], cfg["way"], cfg["shot"], cfg["queries"],
                             seed=cfg["seed"])
    bank = FeatureBank(cached, "cpu", reader=RowReader(cfg["cache"], normalise=evaluated_input_norm(summary)),
                       prefetch=READ_AHEAD)
    try:
        _draw_episode_pictures(cached, bank, sampler, run_dir, head, clips_root, out)
    finally:
        bank.close()
    return written


def _run_head(run_dir, cached, results_dir):
    """The head of ``run_dir``'s best.pt (None without one), refused when it was not trained on features like the
    evaluated cache's (m3net.train.checkpoint.check_features)."""
    checkpoint = os.path.join(run_dir, "best.pt") if run_dir else ""
    if not os.path.exists(checkpoint):
        return None
    from m3net.train.checkpoint import check_features
    from m3net.train.evaluate import load_trained_head

    head, state = load_trained_head(checkpoint, "cpu")
    check_features(state, f"--run {checkpoint}", cached.feature_shape,
                   f"{cached.path} (the cache {results_dir} was evaluated on)", cached.provenance())
    return head


def _draw_episode_pictures(cached, bank, sampler, run_dir, head, clips_root, out):
    """alignment.png and activations.png from the evaluation's seeded episodes; ``head``: the --run's, or None."""
    import click

    from m3net.model.m3net_head import M3Net

    episode, query_index = sampler.episode(0), 0
    found = None
    if hasattr(head, "matcher_inputs") and head.config.use_im:
        from m3net.model import build_head

        found = contrast_query(head, build_head("otam", feature_dim=bank.clip_shape[-1]), bank, sampler)
    if found:
        episode, query_index, wrong_label = found
    query_id = cached.video_ids[int(episode.query_rows[query_index])]
    if found:
        plot_alignment(contrast_panels(head, cached, bank, episode, query_index, wrong_label),
                       f"{query_id}: M3Net right, OTAM wrong (drawn: hard-DTW paths; OTAM scores soft paths)",
                       out("alignment.png"))
    else:
        plot_alignment(best_support_panel(cached, bank, episode), "cosine cost between pooled cached frames",
                       out("alignment.png"))
    support, _, query, _ = bank.episode(episode)
    frames = _query_frames(clips_root, cached.attrs, query_id) if clips_root else None
    where = f"{query_id}, a query of the evaluation's seeded {sampler.split_name} episodes"
    if isinstance(head, M3Net):
        maps = stage_activation_maps(head, support, query, query_index)
        title = f"{where}\ngradient x activation of each stage's frame features per patch (row-scaled)"
    else:
        maps = {"backbone": backbone_map(query[query_index])}
        why = (f"head {head.name!r} has no context encoders" if head is not None
               else f"no best.pt in {run_dir}" if run_dir else "no --run")
        title = f"{where}\nthe backbone's map only ({why}; `--run` with an m3net run draws every stage)"
        if run_dir:
            click.echo(f"activations.png: {why}; drawing the backbone's map only", err=True)
    plot_stage_activations(frames, maps, title, out("activations.png"))
