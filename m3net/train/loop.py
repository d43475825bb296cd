"""``m3net train-head``: episodic training of a few-shot head on the feature cache (paper §4.2).

The cache's train and val splits are loaded once into (GPU or host) memory; episode ``i`` is a
pure function of (seed, i), and checkpoints carry the model, optimizer, scheduler, RNG state and
step, so ``--resume`` continues to exactly the result of an uninterrupted run.
"""
import csv
import dataclasses
import os
import time
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from m3net.cache import ProvenanceError, load_cache
from m3net.cache.schema import provenance_differences
from m3net.data.episodes import EpisodeSampler
from m3net.model import build_head
from m3net.runtime import resolve_device
from m3net.train.checkpoint import load_checkpoint, restore_rng, rng_state, save_checkpoint
from m3net.train.common import FeatureBank, episode_accuracies, mean_and_ci


@dataclass
class TrainConfig:
    cache: str
    out: str = "runs/head"
    head: str = "m3net"
    head_options: dict = field(default_factory=dict)
    way: int = 5
    shot: int = 1
    queries: int = 5  # per class, training episodes
    val_queries: int = 1
    episodes: int = 60_000
    lr: float = 1e-4
    momentum: float = 0.9  # the paper says SGD, lr 1e-4; momentum and weight decay are ours
    weight_decay: float = 5e-4
    lr_step: int = 2_000
    lr_gamma: float = 0.5
    val_every: int = 1_000
    val_episodes: int = 300
    checkpoint_every: int = 500
    log_every: int = 50
    seed: int = 0
    device: str = "auto"
    resume: bool = False


TRAIN_FIELDS = ("step", "loss", "views_loss", "lr", "episodes_per_s")
VAL_FIELDS = ("step", "val_acc", "val_ci", "best_val_acc")


def append_csv(path, fields, row):
    new = not os.path.exists(path)
    with open(path, "a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        if new:
            writer.writeheader()
        writer.writerow(row)


def tensorboard_writer(out):
    """A SummaryWriter on OUT/tensorboard, or None when tensorboard is not installed (it is optional)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(os.path.join(out, "tensorboard"))


@torch.no_grad()
def validate(head, bank, sampler, episodes, view="y"):
    """Mean accuracy (%) and 95% CI of ``view`` over the sampler's first ``episodes`` episodes."""
    was_training = head.training
    head.eval()
    accs = []
    for index in range(episodes):
        support, support_labels, query, query_labels = bank.episode(sampler.episode(index))
        accs.append(episode_accuracies(head(support, support_labels, query), query_labels)[view])
    head.train(was_training)
    return mean_and_ci(accs)


# The length of a run, its logging cadence and where files live may change on resume.
RESUMABLE_CHANGES = frozenset({"episodes", "resume", "device", "log_every", "val_every", "checkpoint_every", "out"})


def check_resumed_config(saved, config, path, free=RESUMABLE_CHANGES):
    """Refuse to --resume a run with settings that would change its result, naming each one."""
    changed = [k for k in saved if k not in free and saved[k] != getattr(config, k)]
    if changed:
        raise ValueError(f"--resume {path}: the run was started with other settings: "
                         + ", ".join(f"{k}={saved[k]!r} (now {getattr(config, k)!r})" for k in changed))


def _check_resume(state, config, provenance, path):
    # The cache is checked by its provenance below, not by its path.
    check_resumed_config(state["train_config"], config, path, RESUMABLE_CHANGES | {"cache"})
    diffs = provenance_differences(provenance, state["provenance"])
    if diffs:
        raise ProvenanceError(f"{config.cache}: differs from the cache the checkpoint was trained on: "
                              + "; ".join(f"{k}: {a!r} vs {b!r}" for k, a, b in diffs))


def train_head(config, progress=True):
    """Trains ``config.head``; writes best.pt, last.pt, train_log.csv, val_log.csv into config.out."""
    device = resolve_device(config.device)
    os.makedirs(config.out, exist_ok=True)
    last_path, best_path = os.path.join(config.out, "last.pt"), os.path.join(config.out, "best.pt")
    cached = load_cache(config.cache, splits=("train", "val"))
    provenance = cached.provenance()
    state = None
    if config.resume:
        state = load_checkpoint(last_path)
        _check_resume(state, config, provenance, last_path)
    elif os.path.exists(last_path):
        raise FileExistsError(f"{last_path} exists: pass --resume to continue that run, or choose another --out")

    bank = FeatureBank(cached, device)
    num_frames, _, _, feature_dim = bank.clip_shape
    torch.manual_seed(config.seed)  # parameter init
    head = build_head(config.head, feature_dim=feature_dim, num_frames=num_frames, **config.head_options).to(device)
    if not head.trainable:
        raise ValueError(f"head {config.head!r} has no parameters to train: score it with `m3net evaluate --head {config.head}`")
    optimizer = torch.optim.SGD(head.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.lr_step, gamma=config.lr_gamma)
    train_sampler = EpisodeSampler(cached.labels, cached.split, "train", config.way, config.shot, config.queries,
                                   seed=config.seed, class_names=cached.classes)
    val_sampler = EpisodeSampler(cached.labels, cached.split, "val", config.way, config.shot, config.val_queries,
                                 seed=config.seed + 1, class_names=cached.classes)
    step, best = 0, -1.0
    if state is not None:
        head.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        restore_rng(state["rng"])
        step, best = state["step"], state["best_val_acc"]

    def snapshot():
        return dict(head=config.head, head_config=head.config_dict(), train_config=dataclasses.asdict(config),
                    provenance=provenance, model=head.state_dict(), optimizer=optimizer.state_dict(),
                    scheduler=scheduler.state_dict(), rng=rng_state(), step=step, best_val_acc=best)

    board = tensorboard_writer(config.out)
    head.train()
    window_loss, window_views, window_start = 0.0, {}, time.perf_counter()
    bar = tqdm(total=config.episodes, initial=step, disable=not progress, desc=f"train {config.head}", unit="ep")
    try:
        while step < config.episodes:
            episode = train_sampler.episode(step)
            support, support_labels, query, query_labels = bank.episode(episode, rng=train_sampler.rng(step))
            outputs = head(support, support_labels, query)
            loss = head.loss(outputs, query_labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            window_loss += loss.item()
            for view in head.train_views:
                if view in outputs:
                    view_loss = torch.nn.functional.cross_entropy(outputs[view].detach(), query_labels).item()
                    window_views[view] = window_views.get(view, 0.0) + view_loss
            bar.update(1)
            if step % config.log_every == 0 or step == config.episodes:
                count = (step - 1) % config.log_every + 1
                rate = count / (time.perf_counter() - window_start)
                row = {"step": step, "loss": window_loss / count,
                       "views_loss": " ".join(f"{v}={l / count:.4f}" for v, l in window_views.items()),
                       "lr": scheduler.get_last_lr()[0], "episodes_per_s": rate}
                append_csv(os.path.join(config.out, "train_log.csv"), TRAIN_FIELDS, row)
                bar.set_postfix(loss=f"{row['loss']:.3f}", eps=f"{rate:.1f}/s")
                if board:
                    board.add_scalar("train/loss", row["loss"], step)
                    board.add_scalar("train/episodes_per_s", rate, step)
                    for view, view_loss in window_views.items():
                        board.add_scalar(f"train/loss_{view}", view_loss / count, step)
                window_loss, window_views, window_start = 0.0, {}, time.perf_counter()
            if step % config.val_every == 0 or step == config.episodes:
                acc, ci = validate(head, bank, val_sampler, config.val_episodes)
                if acc > best:
                    best = acc
                    save_checkpoint(best_path, **snapshot())
                append_csv(os.path.join(config.out, "val_log.csv"), VAL_FIELDS,
                            {"step": step, "val_acc": acc, "val_ci": ci, "best_val_acc": best})
                if board:
                    board.add_scalar("val/acc", acc, step)
                save_checkpoint(last_path, **snapshot())
            elif step % config.checkpoint_every == 0:
                save_checkpoint(last_path, **snapshot())
    except KeyboardInterrupt:
        save_checkpoint(last_path, **snapshot())
        bar.close()
        raise
    bar.close()
    if board:
        board.close()
    return {"out": config.out, "step": step, "best_val_acc": best, "best": best_path, "last": last_path}
