"""``m3net train-head``: episodic training of a few-shot head on the feature cache (paper §4.2).

The cache's train and val splits are loaded once into (GPU or host) memory; episode ``i`` is a
pure function of (seed, i), and checkpoints carry the model, optimizer, scheduler, RNG state and
the episodes trained (one optimizer step each), so ``--resume`` continues to exactly the result of
an uninterrupted run.
"""
import dataclasses
import logging

import torch

from m3net.cache import load_cache
from m3net.config import RunSettings, setting, settings
from m3net.data.episodes import EpisodeSampler, EpisodeSettings
from m3net.errors import ConfigError
from m3net.model import build_head
from m3net.model.registry import HeadSettings
from m3net.runtime import resolve_device
from m3net.train.checkpoint import (
    check_features,
    features_entry,
    load_module_state,
    optimizer_steps,
    restore_rng,
    rng_state,
    trained_episodes,
)
from m3net.train.features import (
    InputNormSettings,
    ResidencySettings,
    input_norm_for,
    open_bank,
    refuse_double_normalisation,
)
from m3net.train.loop import (
    RESUMABLE_CHANGES,
    EpisodeTask,
    OptimizerSettings,
    RunFolder,
    Schedule,
    ScheduleSettings,
    advance_schedule,
    check_resumed_config,
    clip_gradients,
    make_optimizer,
    make_scheduler,
    run_episodes,
)
from m3net.train.metrics import episode_accuracies, mean_and_ci
from m3net.train.presets import PresetSettings

logger = logging.getLogger(__name__)


@settings
class TrainConfig(HeadSettings, EpisodeSettings, OptimizerSettings, ScheduleSettings, InputNormSettings,
                  ResidencySettings, PresetSettings, RunSettings):
    cache: str = setting(help="HDF5 feature cache from `m3net extract`.", path="file")
    out: str = setting("runs/head", "Run folder: best.pt, last.pt, train_log.csv, val_log.csv.", path="dir")


def run_input_norm(config, state, path):
    """The InputNorm of a train-head run: a resumed run's own (its checkpoint's statistics), else --input-norm
    ("auto": none) with the cache's training statistics. A head that normalises inside (the m3net head's
    option input_norm, kept for older checkpoints) must not be normalised twice."""
    norm = input_norm_for(config.input_norm, [(path, state)] if state is not None else (), config.cache)
    refuse_double_normalisation(norm, config.head_options)
    inner = config.head_options.get("input_norm", "none")
    if inner != "none":
        logger.warning(f"--head-opt input_norm={inner} normalises inside the {config.head} head only; "
                       f"--input-norm {inner} gives every head the same input (the head option is kept so that "
                       "older checkpoints load and score the same)")
    return norm


# A resumed run may read the same cache from another path: the cache is checked by its features' shape and its
# provenance, not by its path.
RESUMABLE = RESUMABLE_CHANGES | {"cache"}


def _check_resume(state, config, cached, path):
    check_resumed_config(state["train_config"], config, path, RESUMABLE)
    check_features(state, f"--resume {path}", cached.feature_shape, f"--cache {config.cache}", cached.provenance())


class HeadTrainingTask(EpisodeTask):
    """One train-head run: the head with its optimizer and lr schedule, the cached features (``bank``) and the
    samplers of the train and val episodes drawn from them. Episode ``index`` trains on its own draw of views;
    the gradients of --accumulate episodes make one optimizer step (and the run's last episode ends one)."""

    def __init__(self, config, head, bank, optimizer, scheduler, train_sampler, val_sampler, features, norm, steps):
        self.config, self.head, self.bank, self.optimizer, self.scheduler = config, head, bank, optimizer, scheduler
        self.train_sampler, self.val_sampler, self.norm = train_sampler, val_sampler, norm
        self.features = features  # what checkpoints say of the features the head reads: provenance and shape
        self.steps = steps  # optimizer steps taken (a resumed run's included)
        self.pending = 0  # episodes whose gradients wait for the next optimizer step (--accumulate)

    def train_step(self, index):
        config, head, optimizer = self.config, self.head, self.optimizer
        support, support_labels, query, query_labels = self.bank.episode(self.train_sampler.episode(index),
                                                                         rng=self.train_sampler.view_rng(index))
        outputs = head(support, support_labels, query)
        loss = head.loss(outputs, query_labels)
        (loss / config.accumulate).backward()  # the step's gradient: the mean over its episodes
        self.pending += 1
        if self.pending == config.accumulate or index + 1 == config.episodes:
            clip_gradients(optimizer, config)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            self.steps, self.pending = self.steps + 1, 0
            advance_schedule(self.scheduler, index + 1)  # --lr-step counts episodes
        views = {view: torch.nn.functional.cross_entropy(outputs[view].detach(), query_labels).item()
                 for view in head.train_views if view in outputs}
        return {"loss": loss.item(), "views": views}

    @torch.no_grad()
    def validate(self, episodes):
        """Mean accuracy (%) and 95% CI of view y over the first --val-episodes val episodes."""
        head, bank, sampler = self.head, self.bank, self.val_sampler
        was_training = head.training
        head.eval()
        accs = []
        bank.prefetch(sampler, 0, self.config.val_episodes)
        for index in range(self.config.val_episodes):
            support, support_labels, query, query_labels = bank.episode(sampler.episode(index))
            accs.append(episode_accuracies(head(support, support_labels, query), query_labels)["y"])
        head.train(was_training)
        return mean_and_ci(accs)

    def snapshot(self):
        config, head = self.config, self.head
        return dict(head=config.head, head_config=head.config_dict(), train_config=dataclasses.asdict(config),
                    **self.features, model=head.state_dict(), optimizer=self.optimizer.state_dict(),
                    scheduler=self.scheduler.state_dict(), rng=rng_state(), **self.norm.checkpoint_entries())

    def optimizer_steps(self):
        return self.steps

    def extra_columns(self):
        return {"lr": self.scheduler.get_last_lr()[0]}

    def whole(self):
        return self.pending == 0


def train_head(config, progress=True):
    """Trains ``config.head``; writes best.pt, last.pt, train_log.csv, val_log.csv into config.out."""
    device = resolve_device(config.device)
    with RunFolder(config.out, config.resume) as run:
        cached = load_cache(config.cache, splits=("train", "val"), features=False)
        provenance = cached.provenance()
        state = run.load_last() if config.resume else None
        if state is not None:
            _check_resume(state, config, cached, run.last_path)
        num_frames, feature_dim = cached.feature_shape[-4], cached.feature_shape[-1]
        torch.manual_seed(config.seed)  # parameter init
        head = build_head(config.head, feature_dim=feature_dim, num_frames=num_frames, **config.head_options)
        head = head.to(device)
        if not head.trainable:
            raise ConfigError(f"--head {config.head} has no parameters to train: score it with "
                              f"`m3net evaluate --head {config.head}`")
        run.record_config("train-head", config, state and state["train_config"], RESUMABLE)
        pool = head.input_pool() if config.pool_on_load else None
        norm = run_input_norm(config, state, run.last_path)
        _, bank, where = open_bank(config.cache, ("train", "val"), device, config.resident, config.memory_limit, pool,
                                   meta=cached, prefetch=config.prefetch, norm=norm)
        run.stack.callback(bank.close)
        logger.info(where)
        optimizer = make_optimizer([{"params": list(head.parameters()), "lr": config.lr}], config)
        scheduler = make_scheduler(optimizer, config)
        train_sampler = EpisodeSampler(cached.labels, cached.split, "train", config.way, config.shot,
                                       config.queries, seed=config.seed, class_names=cached.classes)
        val_sampler = EpisodeSampler(cached.labels, cached.split, "val", config.way, config.shot,
                                     config.val_queries, seed=config.seed + 1, class_names=cached.classes)
        step, steps, best, stale = 0, 0, -1.0, 0  # episodes, optimizer steps, best validation, validations since
        if state is not None:
            load_module_state(head, state["model"], run.last_path)
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            restore_rng(state["rng"])
            step, steps = trained_episodes(state), optimizer_steps(state)
            best, stale = state["best_val_acc"], state.get("stale_validations", 0)
            run.trim_logs(step)
        bank.prefetch(train_sampler, step, config.episodes)
        features = {"provenance": provenance, "features": features_entry(head, cached.feature_shape)}
        task = HeadTrainingTask(config, head, bank, optimizer, scheduler, train_sampler, val_sampler, features, norm,
                                steps)
        schedule = Schedule(config.episodes, config.log_every, config.val_every, config.checkpoint_every,
                            validating=config.val_episodes > 0, patience=config.patience)
        head.train()
        step, best, stale = run_episodes(run, schedule, task, step, best, stale, progress=progress,
                                         desc=f"train {config.head}")
    return {"out": config.out, "episodes": step, "best_val_acc": best, "stopped_early": step < config.episodes,
            "best": run.best_path if best >= 0 else "", "last": run.last_path}
