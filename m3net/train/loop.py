"""The run scaffold both training loops use (``train-head`` and ``finetune``): one run folder with
its lock, checkpoints and logs, and one episode loop (``run_episodes``, driving each command's ``EpisodeTask``)
that logs, validates, checkpoints, stops on a non-finite loss and saves on Ctrl-C. A fix to any of these lands
once, for both.

A run folder holds ``last.pt`` (every --checkpoint-every episodes and after each validation),
``best.pt`` (best validation accuracy), ``train_log.csv``, ``val_log.csv``, ``failures*.csv``, ``config.json``
(the run's settings), ``stopped.json`` (only after a non-finite loss stopped it) and,
with tensorboard installed, ``tensorboard/``. One process writes it (``.lock``); ``--resume``
continues from ``last.pt`` and first drops log rows past its episode count, so a run killed between
two checkpoints logs each episode once.

Every count is in training episodes, over all processes: --episodes, --lr-step, --val-every,
--checkpoint-every and --log-every, the logs' ``episodes`` column and the checkpoints' ``episodes``.
An optimizer step may train several (finetune: one per torchrun rank, times --accumulate); the logs and
checkpoints also hold ``optimizer_steps``. Validation and checkpoints fall on the first optimizer-step
boundary at or after each multiple of their interval (between steps the state is whole, so --resume is
exact).
"""
import abc
import contextlib
import csv
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field

from m3net.config import RUN_CONFIG, Settings, load_run_config, setting, settings, write_run_config
from m3net.errors import ConfigError, M3NetError, NonFiniteError
from m3net.locking import exclusive_lock
from m3net.progress import progress_bar
from m3net.train.checkpoint import load_checkpoint, save_checkpoint

logger = logging.getLogger(__name__)

VAL_FIELDS = ("episodes", "optimizer_steps", "val_acc", "val_ci", "best_val_acc")
RUN_FILES = ("last.pt", "best.pt", "train_log.csv", "val_log.csv")
STOPPED = "stopped.json"  # written when a run stops on a non-finite loss


def read_stop(out):
    """What OUT/stopped.json says of a run that stopped on a non-finite loss, or None."""
    path = os.path.join(out, STOPPED)
    if not os.path.exists(path):
        return None
    with open(path) as fh:
        return json.load(fh)


class Interrupted(M3NetError):
    """Ctrl-C: the state was saved (when whole) and ``--resume`` continues."""

    exit_code = 130


def append_csv(path, fields, row):
    new = not os.path.exists(path)
    with open(path, "a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        if new:
            writer.writeheader()
        writer.writerow(row)


def trim_csv(path, episodes, added=()):
    """Drop the rows of an episode-keyed CSV log past ``episodes`` (written after the checkpoint resumed from).
    A log keyed by ``step`` (written before the episodes column; a step was an episode of one process) gets the
    current header: ``step`` becomes ``episodes``, followed by the columns ``added`` (left blank in old rows)."""
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        fields, rows = list(reader.fieldnames or ()), list(reader)
    if "step" in fields and "episodes" not in fields:
        at = fields.index("step")
        fields[at:at + 1] = ["episodes", *added]
        rows = [{**{k: v for k, v in r.items() if k != "step"}, "episodes": r["step"], **dict.fromkeys(added, "")}
                for r in rows]
    rows = [r for r in rows if r.get("episodes") and int(r["episodes"]) <= episodes]
    tmp = f"{path}.tmp"
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def tensorboard_writer(out):
    """A SummaryWriter on OUT/tensorboard, or None when tensorboard is not installed (it is optional)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(os.path.join(out, "tensorboard"))


OPTIMIZERS = ("sgd", "adam")


@settings
class OptimizerSettings(Settings):
    """The optimizer and learning-rate schedule of train-head and finetune (paper §4.2: SGD, lr 1e-4, x0.5
    every 2 000 episodes; momentum and weight decay are m3net's choices where the paper is silent)."""

    optimizer: str = setting("sgd", "sgd (the paper's, with --momentum) or adam (HyRSM's reference code; --momentum is "
                             "then unused).", choices=OPTIMIZERS)
    lr: float = setting(1e-4, "Learning rate (of the head, in finetune; paper: 1e-4).", minimum=0)
    momentum: float = setting(0.9, "SGD momentum.", minimum=0, maximum=1)
    weight_decay: float = setting(5e-4, "Weight decay (L2).", minimum=0)
    clip_grad: float = setting(0.0, "Clip the gradients' global norm to this before every optimizer step (0: off). "
                               "Heads with unnormalised distance logits (STRM) can diverge without it.", minimum=0)
    lr_step: int = setting(2_000, "Multiply the learning rate(s) by --lr-gamma every this many training episodes "
                           "(over all torchrun ranks).", minimum=1)
    lr_gamma: float = setting(0.5, "Learning-rate decay factor.", minimum=0, exclusive=True)
    accumulate: int = setting(1, "Episodes (per torchrun rank) whose gradients are averaged into one optimizer step: "
                              "a step trains ranks x this many episodes (TRX's, STRM's and HyRSM's reference code: "
                              "16).", minimum=1)


@settings
class ScheduleSettings(Settings):
    """How long a training run lasts and how often it logs, validates and saves, in episodes."""

    episodes: int = setting(60_000, "Training episodes (paper: 60 000), over all torchrun ranks.", minimum=1)
    val_every: int = setting(1_000, "Validate on --val-episodes val episodes, save last.pt and update best.pt every "
                             "this many training episodes.", minimum=1)
    val_episodes: int = setting(300, "Validation episodes (0: no validation, no best.pt).", minimum=0)
    val_queries: int = setting(1, "Queries per class in validation episodes.", minimum=1)
    checkpoint_every: int = setting(500, "Save last.pt every this many episodes.", minimum=1)
    log_every: int = setting(50, "Write a train_log.csv row every this many episodes.", minimum=1)
    patience: int = setting(0, "Stop early once this many validations in a row have not beaten the best validation "
                            "accuracy (0: train all --episodes, the cap); best.pt keeps the best.", minimum=0)
    resume: bool = setting(False, "Continue the run in --out from its last.pt, exactly.", option="--resume")


def make_optimizer(groups, config):
    """config.optimizer over parameter groups (each with its "lr"), with config's weight decay."""
    import torch

    if config.optimizer == "adam":
        return torch.optim.Adam(groups, weight_decay=config.weight_decay)
    return torch.optim.SGD(groups, momentum=config.momentum, weight_decay=config.weight_decay)


def make_scheduler(optimizer, config):
    """torch's StepLR over config.lr_step and config.lr_gamma, counted in training episodes by
    ``advance_schedule`` (its state stays StepLR's, with ``last_epoch`` = episodes)."""
    import torch

    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.lr_step, gamma=config.lr_gamma)


def advance_schedule(scheduler, episodes):
    """After an optimizer step: each group's lr becomes its base x gamma^(episodes // step_size), however many
    episodes the step trained (torchrun ranks x --accumulate). An older checkpoint's StepLR counted optimizer
    steps: one per episode in one process without --accumulate, so it loads the same."""
    scheduler.last_epoch = episodes
    scheduler._last_lr = [base * scheduler.gamma ** (episodes // scheduler.step_size) for base in scheduler.base_lrs]
    for group, lr in zip(scheduler.optimizer.param_groups, scheduler._last_lr):
        group["lr"] = lr


def clip_gradients(optimizer, config):
    """Clips the global gradient norm of the optimizer's parameters to config.clip_grad (if > 0)."""
    import torch

    if config.clip_grad > 0:
        torch.nn.utils.clip_grad_norm_([p for group in optimizer.param_groups for p in group["params"]],
                                       config.clip_grad)


# The length of a run, its logging cadence and where files live may change on resume.
RESUMABLE_CHANGES = frozenset({"episodes", "patience", "resume", "device", "log_every", "val_every", "checkpoint_every",
                               "out", "resident", "memory_limit", "pool_on_load", "prefetch"})


def check_resumed_config(saved, config, path, free=RESUMABLE_CHANGES):
    """Refuse to --resume a run with settings that would change its result, naming each one."""
    changed = [k for k in saved if k not in free and saved[k] != getattr(config, k, saved[k])]
    if changed:
        raise ConfigError(f"--resume {path}: the run was started with other settings: "
                          + ", ".join(f"{k}={saved[k]!r} (now {getattr(config, k)!r})" for k in changed))


class RunFolder:
    """``out`` opened by one process: locked, refused if it holds a run and ``resume`` is off.

    Only the ``writer`` (rank 0 under torchrun) locks and writes; other ranks read ``last.pt``.
    """

    def __init__(self, out, resume, writer=True):
        self.out, self.resume, self.writer = out, resume, writer
        self.last_path, self.best_path = os.path.join(out, "last.pt"), os.path.join(out, "best.pt")
        self.stack = contextlib.ExitStack()
        self.board = None

    def __enter__(self):
        try:
            os.makedirs(self.out, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"--out {self.out}: cannot create the run folder ({err.strerror})") from None
        if not os.access(self.out, os.W_OK):
            raise ConfigError(f"--out {self.out}: the run folder is not writable")
        if self.writer:
            self.stack.enter_context(exclusive_lock(os.path.join(self.out, ".lock"), f"the run folder {self.out}"))
        try:
            self._check_contents()
            if self.writer:
                self.board = tensorboard_writer(self.out)
        except BaseException:
            self.stack.close()
            raise
        return self

    def record_stop(self, saved, episodes, message):
        """OUT/stopped.json: the run stopped on a non-finite loss at ``episodes``, last.pt holding episode ``saved``
        (a caller that trains several heads, the demo, reads it to go on with the others)."""
        if self.writer:
            with open(os.path.join(self.out, STOPPED), "w") as fh:
                json.dump({"reason": "non-finite training loss", "episodes": episodes, "saved": saved,
                           "message": message}, fh, indent=1)

    def _check_contents(self):
        held = [name for name in RUN_FILES if os.path.exists(os.path.join(self.out, name))]
        if self.resume and "last.pt" not in held:
            raise ConfigError(f"--resume: {self.out} holds no last.pt to continue from")
        if not self.resume and held:
            raise ConfigError(f"--out {self.out} already holds a run ({', '.join(held)}): pass --resume to "
                              "continue it, or choose another --out")
        if self.writer and os.path.exists(os.path.join(self.out, STOPPED)):
            os.remove(os.path.join(self.out, STOPPED))  # a resumed run tries again; it says so again if it stops

    def __exit__(self, *exc):
        if self.board:
            self.board.close()
        self.stack.close()

    def load_last(self):
        return load_checkpoint(self.last_path)

    def record_config(self, command, config, resumed=None, free=RESUMABLE_CHANGES):
        """Writes OUT/config.json (every resolved setting; ``--config`` replays it) before the run trains. When
        resuming (``resumed``: last.pt's train_config), the file there must be that run's: settings in it that
        differ from the checkpoint's, beyond those a resume may change (``free``), are refused, naming them."""
        if not self.writer:
            return
        path = os.path.join(self.out, RUN_CONFIG)
        if resumed is not None and os.path.exists(path):
            wrote, saved = load_run_config(path)
            resumed = json.loads(json.dumps(resumed, default=str))  # as JSON holds it (tuples are lists there)
            differ = sorted(k for k in saved if k not in free and k in resumed and saved[k] != resumed[k])
            if wrote != command or differ:
                raise ConfigError(f"--resume {self.out}: its {RUN_CONFIG} is not the run in {self.last_path} ("
                                  + (", ".join(f"{k}: {saved[k]!r} vs {resumed[k]!r}" for k in differ)
                                     or f"written by `m3net {wrote}`") + "); restore it or remove it")
        write_run_config(self.out, command, config)

    def trim_logs(self, episodes, own=()):
        """Logs agree with the checkpoint at ``episodes``: rows written after it are dropped. The writer
        trims the shared logs; each rank trims the logs it writes itself (``own``: file names)."""
        shared = ("train_log.csv", "val_log.csv") if self.writer else ()
        for name in (*shared, *own):
            path = os.path.join(self.out, name)
            if os.path.exists(path):
                trim_csv(path, episodes, added=("optimizer_steps",) if name in shared else ())

    def append(self, name, fields, row):
        if self.writer:
            append_csv(os.path.join(self.out, name), fields, row)

    def scalars(self, prefix, values, step):
        if self.board:
            for key, value in values.items():
                if isinstance(value, (int, float)):
                    self.board.add_scalar(f"{prefix}/{key}", value, step)

    def save(self, path, state):
        if self.writer:
            save_checkpoint(path, **state)


@dataclass
class Schedule:
    """How long a run lasts and how often it logs, validates and saves (in episodes)."""

    episodes: int
    log_every: int
    val_every: int
    checkpoint_every: int
    validating: bool  # False: no validation, no best.pt
    stride: int = 1  # episodes one train_step call trains (finetune under torchrun: one per rank)
    patience: int = 0  # stop once this many validations in a row did not beat the best (0: never)

    def exhausted(self, stale):
        """True when ``stale`` validations in a row without a new best end the run early."""
        return self.validating and self.patience > 0 and stale >= self.patience


@dataclass
class Window:
    """Training episodes since the last log line (only those run in this process: after a resume
    the first window counts from the resumed episode, not from the previous log line)."""

    loss: float = 0.0
    views: dict = field(default_factory=dict)
    calls: int = 0  # train_step calls that trained (their losses are averaged)
    trained: int = 0  # episodes
    skipped: int = 0  # episodes
    start: float = 0.0

    def reset(self):
        self.loss, self.views, self.calls, self.trained, self.skipped = 0.0, {}, 0, 0, 0
        self.start = time.perf_counter()
        return self

    def add(self, result, episodes):
        if result is None:
            self.skipped += episodes
            return
        self.calls += 1
        self.trained += episodes
        self.loss += result["loss"]
        for view, value in result.get("views", {}).items():
            self.views[view] = self.views.get(view, 0.0) + value

    def row(self):
        count = max(self.calls, 1)
        return {"loss": self.loss / count,
                "views_loss": " ".join(f"{v}={loss / count:.4f}" for v, loss in self.views.items()),
                "episodes_per_s": self.trained / max(time.perf_counter() - self.start, 1e-9),
                "skipped_episodes": self.skipped}


TRAIN_FIELDS = ("episodes", "optimizer_steps", "loss", "views_loss", "episodes_per_s", "skipped_episodes")


def _crossed(before, after, every):
    """A multiple of ``every`` lies in (before, after]."""
    return after // every > before // every


class EpisodeTask(abc.ABC):
    """What ``run_episodes`` trains: one run's models, optimizer and episodes, and how one step changes them.

    train_step(episodes): with ``episodes`` trained so far, trains the next ``schedule.stride`` (over all ranks);
        returns {"loss": float, "views": {view: loss}}, or None when they were skipped.
    validate(episodes) -> (accuracy %, 95% CI) after ``episodes`` training episodes; run on every rank.
    snapshot() -> the checkpoint state (``run_episodes`` adds ``episodes``, ``optimizer_steps``, ``best_val_acc`` and
        ``stale_validations``, so --resume keeps counting).
    optimizer_steps() -> the optimizer steps taken so far.
    extra_columns() -> more train_log.csv columns (lr, ...); by default none.
    whole(): the state is between optimizer steps: validations and checkpoints due meanwhile wait for it, and Ctrl-C
        saves only then; by default always (one optimizer step per train_step).
    agree(flag): ``flag`` AND-ed over the ranks; by default one process, ``flag`` itself.
    """

    @abc.abstractmethod
    def train_step(self, episodes):
        ...

    @abc.abstractmethod
    def validate(self, episodes):
        ...

    @abc.abstractmethod
    def snapshot(self):
        ...

    @abc.abstractmethod
    def optimizer_steps(self):
        ...

    def extra_columns(self):
        return {}

    def whole(self):
        return True

    def agree(self, flag):
        return flag


def run_episodes(run, schedule, task, start, best, stale=0, progress=True, desc="train"):
    """Trains ``task`` (an EpisodeTask) from episode ``start`` to ``schedule.episodes``, or until ``schedule.patience``
    validations in a row have not beaten the best; ``best`` and ``stale``: the best validation accuracy so far and the
    validations since it (a resumed run's). Returns (episodes, best validation accuracy, validations since the best).
    """
    window = Window().reset()
    fields = TRAIN_FIELDS + tuple(task.extra_columns())
    episodes = saved = start
    due_validation = due_save = False
    bar = progress_bar(total=schedule.episodes, initial=start, enabled=progress and run.writer, desc=desc,
                       unit="ep")

    def save(path):
        run.save(path, {**task.snapshot(), "episodes": episodes, "optimizer_steps": task.optimizer_steps(),
                        "best_val_acc": best, "stale_validations": stale})

    try:
        while episodes < schedule.episodes and not schedule.exhausted(stale):
            result = task.train_step(episodes)
            before, episodes = episodes, min(episodes + schedule.stride, schedule.episodes)
            if not task.agree(result is None or math.isfinite(result["loss"])):
                error = NonFiniteError(
                    f"episodes {before + 1}-{episodes}: the training loss is not finite ({result and result['loss']}); "
                    f"stopped. {run.last_path} keeps episode {saved}, the last saved finite state. Lower --lr, or "
                    "check the cache for NaN/inf features (`m3net cache-info`).")
                run.record_stop(saved, episodes, str(error))
                raise error
            window.add(result, episodes - before)
            bar.update(episodes - before)
            final = episodes == schedule.episodes
            if _crossed(before, episodes, schedule.log_every) or final:
                row = {"episodes": episodes, "optimizer_steps": task.optimizer_steps(), **window.row(),
                       **task.extra_columns()}
                run.append("train_log.csv", fields, row)
                run.scalars("train", {k: v for k, v in row.items() if k != "episodes"}, episodes)
                bar.set_postfix(loss=f"{row['loss']:.3f}", eps=f"{row['episodes_per_s']:.2f}/s")
                window.reset()
            due_validation |= schedule.validating and (_crossed(before, episodes, schedule.val_every) or final)
            due_save |= _crossed(before, episodes, schedule.checkpoint_every) or final
            if not (due_validation or due_save) or not task.whole():
                continue
            if due_validation:
                acc, ci = task.validate(episodes)
                stale = 0 if acc > best else stale + 1
                if acc > best:
                    best = acc
                    save(run.best_path)
                run.append("val_log.csv", VAL_FIELDS, {"episodes": episodes, "optimizer_steps": task.optimizer_steps(),
                                                       "val_acc": acc, "val_ci": ci, "best_val_acc": best})
                run.scalars("val", {"acc": acc}, episodes)
            save(run.last_path)
            saved, due_validation, due_save = episodes, False, False
    except KeyboardInterrupt:
        if task.whole():  # between optimizer steps the state is whole: save it, so --resume loses nothing
            save(run.last_path)
            saved = episodes
        raise Interrupted(f"interrupted: {run.last_path} holds episode {saved}; "
                          "continue with the same command and --resume") from None
    finally:
        bar.close()
    if episodes < schedule.episodes and schedule.exhausted(stale):
        logger.info(f"{desc}: stopped early at episode {episodes}: {stale} validations in a row without beating the "
                    f"best validation accuracy {best:.2f}% (--patience {schedule.patience}); best.pt keeps it")
    return episodes, best, stale
