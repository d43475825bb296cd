"""Datasets for stage one: which clips exist, their class and split, and where their frames are.

    gym99, gym288, diving48   class/clip lists from the shipped M3Net few-shot splits
                              (m3net/splits/<Gym99|Gym288|Diving48>/{train,val,test}list.txt,
                              lines ``<class>/<clip_id>``); ``--root`` holds the clips
    folder                    ``<root>/<class>/<clip>`` (every clip goes to one split,
                              ``folder_split``, default test: a user's own few-shot test set)
                              or ``<root>/{train,val,test}/<class>/<clip>``
    synthetic                 the folder written by ``m3net make-synthetic``: its manifest.json
                              lists every clip, so clips missing on disk are counted

A clip on disk is a video file (mp4, webm, mkv, avi) named ``<clip_id>.<ext>`` or a frame folder
``<clip_id>/`` of zero-padded images (``img_00001.jpg``, ``00001.png``, ...), anywhere under the
root (flat or in class folders). Clips of a list that are not found are listed as missing. Hidden
entries (names starting with ".") are never clips or classes: `m3net frames` writes a clip under a
hidden name until it is complete, and macOS leaves ``._<clip>.mp4`` files beside copied videos.

A partial copy is the normal case (YouTube videos vanish): every command works on the clips that are
present. ``coverage`` is the one place that says what a root offers per split (clips and classes
present out of those listed, and the classes that can fill an episode); ``Coverage.require_episodes``
refuses, before any work, a split that cannot give one episode.
"""
import os
import re
from dataclasses import dataclass, field
from importlib import resources

from m3net.config import Settings, setting, settings
from m3net.data.episodes import SPLITS, episode_classes
from m3net.errors import DatasetError  # noqa: F401 (re-exported)

SPLIT_FOLDERS = {"gym99": "Gym99", "gym288": "Gym288", "diving48": "Diving48"}
LISTED_DATASETS = tuple(SPLIT_FOLDERS)
FOLDER_DATASETS = ("folder", "synthetic")
DATASETS = LISTED_DATASETS + FOLDER_DATASETS
VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")

# FineGym: <youtube id>_E_<event start 6d>_<event end 6d>_A_<action start 4d>_<action end 4d>.
FINEGYM_ID = re.compile(r"^(?P<youtube_id>[A-Za-z0-9_-]{11})_E_(?P<event_start>\d{6})_(?P<event_end>\d{6})"
                        r"_A_(?P<action_start>\d{4})_(?P<action_end>\d{4})$")
# Diving48: <youtube id>_<5 digits>; youtube ids contain '_' and '-', so split on the last '_'.
DIVING48_ID = re.compile(r"^(?P<youtube_id>[A-Za-z0-9_-]+)_(?P<index>\d{5})$")
# A frame file: any prefix, a zero-padded frame number, an image extension.
FRAME_FILE = re.compile(r"^(?P<prefix>.*?)(?P<number>\d+)\.(?:jpg|jpeg|png)$", re.IGNORECASE)



@settings
class DatasetSettings(Settings):
    """Which dataset a command reads and where its clips are."""

    dataset: str = setting(help="gym99, gym288, diving48 (the split lists shipped with m3net), folder (a "
                           "<class>/<clip> tree) or synthetic (from `m3net make-synthetic`); see `m3net dataset-info`.",
                           choices=DATASETS)
    root: str = setting(help="Folder holding the clips: video files or frame folders, flat or in class folders.",
                        path="dir")


@dataclass(frozen=True)
class Clip:
    clip_id: str
    label: int  # index into Dataset.classes
    split: str  # train | val | test
    path: str = None  # video file or frame folder; None when not found under the root


@dataclass
class Dataset:
    name: str
    root: str
    classes: list  # class names: train classes first, then val, then test (first appearance)
    clips: list = field(default_factory=list)  # [Clip] in split order, then list order

    @property
    def missing(self):
        return [c.clip_id for c in self.clips if c.path is None]

    def present(self, splits=SPLITS, exclude=()):
        """The clips of ``splits`` found under the root, less the ids in ``exclude`` (e.g. clips that failed to
        decode): what every command reads."""
        exclude = set(exclude)
        return [c for c in self.clips if c.path is not None and c.split in splits and c.clip_id not in exclude]

    def require_present(self, splits=SPLITS):
        """DatasetError unless at least one listed clip of ``splits`` is under the root."""
        if self.present(splits):
            return
        listed = [c for c in self.clips if c.split in splits]
        example = (listed or self.clips)[0].clip_id
        raise DatasetError(f"--root {self.root}: none of the {len(listed):,} {self.name} clips listed for "
                           f"{', '.join(splits)} is there; expected video files named like {example}.mp4 (flat or in "
                           f"class folders) or frame folders {example}/img_00001.jpg")

    def summary(self, way=5, shot=1, queries=5, max_missing=5):
        """Per split: classes and clips listed; with a root, the coverage at ``way``/``shot``/``queries`` and the
        missing clips (first ``max_missing`` named)."""
        out = {"dataset": self.name, "root": self.root, "splits": {}}
        if self.root:
            out["episode"] = {"way": way, "shot": shot, "queries": queries}
            covered = coverage(self, way, shot, queries).splits
        for split in SPLITS:
            clips = [c for c in self.clips if c.split == split]
            entry = {"classes": len({c.label for c in clips}), "clips": len(clips)}
            if self.root:
                missing = [c.clip_id for c in clips if c.path is None]
                split_coverage = covered[split]
                entry.update(found=len(clips) - len(missing), missing=len(missing),
                             missing_examples=missing[:max_missing], classes_found=split_coverage.classes,
                             episode_classes=split_coverage.episode_classes,
                             forms_episodes=split_coverage.forms_episodes)
            out["splits"][split] = entry
        return out


@dataclass(frozen=True)
class SplitCoverage:
    """What one split offers under the root: clips and classes present out of those listed, and the classes
    with the ``need`` = shot + queries clips an episode takes of each of its ``way`` classes."""

    split: str
    clips: int  # present: found under the root and not excluded (e.g. failed to decode)
    listed_clips: int
    classes: int  # classes with at least one present clip
    listed_classes: int
    episode_classes: int  # classes with at least ``need`` present clips
    need: int
    way: int

    @property
    def forms_episodes(self):
        return self.episode_classes >= self.way

    def shortfall(self):
        """Why this split cannot give one episode (one clause), or None when it can."""
        if self.forms_episodes:
            return None
        return (f"{self.split} has {self.episode_classes} classes with the {self.need} clips an episode takes of a "
                f"class, --way {self.way} needs {self.way} ({self.clips:,} of {self.listed_clips:,} clips present, "
                f"from {self.classes} of {self.listed_classes} classes)")

    def describe(self):
        return (f"{self.split} {self.clips:,}/{self.listed_clips:,} clips, {self.classes}/{self.listed_classes} "
                f"classes ({self.episode_classes} with >= {self.need} clips)")


@dataclass(frozen=True)
class Coverage:
    """``coverage()`` of every split of a dataset under its root."""

    dataset: str
    root: str
    way: int
    shot: int
    splits: dict  # {split: SplitCoverage}

    def require_episodes(self, splits, what):
        """DatasetError naming every split of ``splits`` that cannot give one episode (``what``: who needs them)."""
        short = [self.splits[s].shortfall() for s in splits if not self.splits[s].forms_episodes]
        if short:
            raise DatasetError(
                f"--root {self.root}: {what} needs episodes the {self.dataset} clips there cannot give: "
                + "; ".join(short) + f" (`m3net dataset-info --dataset {self.dataset} --root {self.root} --way "
                f"{self.way} --shot {self.shot}` shows every split)")

    def as_row(self, splits=SPLITS):
        """Flat columns for a results row: ``<split>_clips``, ``<split>_listed_clips``, ``<split>_classes``,
        ``<split>_listed_classes``, and ``complete`` (every listed clip of ``splits`` was used)."""
        row = {}
        for split in splits:
            c = self.splits[split]
            row.update({f"{split}_clips": c.clips, f"{split}_listed_clips": c.listed_clips,
                        f"{split}_classes": c.classes, f"{split}_listed_classes": c.listed_classes})
        row["complete"] = all(self.splits[s].clips == self.splits[s].listed_clips for s in splits)
        return row

    def describe(self, splits=SPLITS):
        return "; ".join(self.splits[s].describe() for s in splits)


def coverage(dataset, way, shot, queries, exclude=()):
    """The Coverage of ``dataset`` for ``way``-way ``shot``-shot episodes with ``queries`` per class (an int, or
    {split: queries} where splits differ, e.g. training 5 and validation 1), leaving out the clip ids in
    ``exclude`` (clips that failed to decode count as absent)."""
    present = {c.clip_id for c in dataset.present(exclude=exclude)}
    splits = {}
    for split in SPLITS:
        listed = [c for c in dataset.clips if c.split == split]
        here = [c for c in listed if c.clip_id in present]
        per_class = {}
        for clip in here:
            per_class[clip.label] = per_class.get(clip.label, 0) + 1
        need = shot + (queries[split] if isinstance(queries, dict) else queries)
        splits[split] = SplitCoverage(split, len(here), len(listed), len(per_class), len({c.label for c in listed}),
                                      len(episode_classes(per_class, need)), need, way)
    return Coverage(dataset.name, dataset.root, way, shot, splits)


def parse_clip_id(dataset, clip_id):
    """The fields of a clip id ({youtube_id, ...}); ValueError naming the id when it does not fit."""
    pattern = {"gym99": FINEGYM_ID, "gym288": FINEGYM_ID, "diving48": DIVING48_ID}.get(dataset)
    if pattern is None:
        raise DatasetError(f"--dataset {dataset}: clip ids are only defined for {LISTED_DATASETS}")
    match = pattern.match(clip_id)
    if not match:
        expected = ("<youtube id>_<5 digits>" if dataset == "diving48"
                    else "<youtube id>_E_<6 digits>_<6 digits>_A_<4 digits>_<4 digits>")
        raise ValueError(f"{dataset} clip id {clip_id!r}: expected {expected}")
    fields_ = match.groupdict()
    return {k: (v if k == "youtube_id" else int(v)) for k, v in fields_.items()}


def load_split_lists(name):
    """{split: [(class name, clip id)]} from the shipped split lists of ``name``."""
    if name not in SPLIT_FOLDERS:
        raise DatasetError(f"--dataset {name}: no shipped split lists; expected one of {LISTED_DATASETS}")
    folder = resources.files("m3net").joinpath("splits", SPLIT_FOLDERS[name])
    lists = {}
    for split in SPLITS:
        entry = folder.joinpath(f"{split}list.txt")
        entries = []
        for number, line in enumerate(entry.read_text().splitlines(), 1):
            line = line.strip()
            if not line:
                continue
            if "/" not in line:
                raise DatasetError(f"{entry}: line {number} {line!r}: expected <class>/<clip_id>")
            label, clip_id = line.rsplit("/", 1)
            entries.append((label, clip_id))
        lists[split] = entries
    return lists


def _hidden(name):
    return name.startswith(".")


def _is_frame_folder(files):
    return any(FRAME_FILE.match(f) and not _hidden(f) for f in files)


def scan_root(root):
    """{clip id: path} for every video file and frame folder under ``root`` (first in sorted order wins)."""
    if not os.path.isdir(root):
        raise DatasetError(f"--root {root}: not a directory")
    found = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not _hidden(d))
        if folder != root and _is_frame_folder(files):
            found.setdefault(os.path.basename(folder), folder)
            dirs[:] = []  # a frame folder holds frames, not clips
            continue
        for name in sorted(f for f in files if not _hidden(f)):
            stem, ext = os.path.splitext(name)
            if ext.lower() in VIDEO_EXTENSIONS:
                found.setdefault(stem, os.path.join(folder, name))
    return found


def frame_files(folder):
    """[(frame number, prefix, file name)] of the frame images of a frame folder, by frame number
    (``img_00012.jpg`` -> (12, "img_", "img_00012.jpg"))."""
    numbered = []
    for name in os.listdir(folder):
        match = FRAME_FILE.match(name)
        if match and not _hidden(name):
            numbered.append((int(match["number"]), match["prefix"], name))
    return sorted(numbered)


def _listed_dataset(name, root):
    lists = load_split_lists(name)
    located = scan_root(root) if root else {}
    classes, index, clips = [], {}, []
    for split in SPLITS:
        for label, clip_id in lists[split]:
            if label not in index:
                index[label] = len(classes)
                classes.append(label)
            clips.append(Clip(clip_id, index[label], split, located.get(clip_id)))
    return Dataset(name, root or "", classes, clips)


def class_clips(class_dir):
    """[(stem, path)] of the clips (video files, frame folders) directly inside a class folder."""
    out = []
    for name in sorted(n for n in os.listdir(class_dir) if not _hidden(n)):
        path = os.path.join(class_dir, name)
        stem, ext = os.path.splitext(name)
        if os.path.isfile(path) and ext.lower() in VIDEO_EXTENSIONS:
            out.append((stem, path))
        elif os.path.isdir(path) and _is_frame_folder(os.listdir(path)):
            out.append((name, path))
    return out


def _folder_dataset(name, root, folder_split):
    if not root or not os.path.isdir(root):
        raise DatasetError(f"--dataset {name} needs --root DIR with <class>/<clip> folders; got {root!r}")
    if folder_split not in SPLITS:
        raise DatasetError(f"--folder-split {folder_split}: expected one of {SPLITS}")
    subdirs = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)) and not _hidden(d))
    if any(d in SPLITS for d in subdirs):
        # A class that happens to be named train/val/test beside other classes would switch the
        # reader to the split layout and drop its siblings without a word: refuse the mix.
        others = [d for d in subdirs if d not in SPLITS]
        if others:
            splits = [d for d in subdirs if d in SPLITS]
            raise DatasetError(
                f"--root {root}: mixes split folders ({', '.join(splits)}) with class folders "
                f"({', '.join(others[:5])}{', ...' if len(others) > 5 else ''}); use either <root>/<class>/<clip> "
                "or <root>/{train,val,test}/<class>/<clip> (rename a class called train, val or test)")
        split_roots = [(s, os.path.join(root, s)) for s in SPLITS if s in subdirs]
    else:
        split_roots = [(folder_split, root)]
    classes, index, entries = [], {}, []
    for split, split_root in split_roots:
        for label in sorted(d for d in os.listdir(split_root)
                            if os.path.isdir(os.path.join(split_root, d)) and not _hidden(d)):
            for stem, path in class_clips(os.path.join(split_root, label)):
                if label not in index:
                    index[label] = len(classes)
                    classes.append(label)
                entries.append((stem, index[label], split, path))
    if not entries:
        raise DatasetError(f"--root {root}: no clips found; expected <class>/<clip>.mp4 (or frame folders), "
                           f"optionally under train/, val/, test/")
    stems = [e[0] for e in entries]
    unique = len(set(stems)) == len(stems)
    # Clip ids are file stems; when two classes reuse a stem, every id becomes its relative path.
    clips = [Clip(stem if unique else os.path.splitext(os.path.relpath(path, root))[0], label, split, path)
             for stem, label, split, path in entries]
    return Dataset(name, root, classes, clips)


def _synthetic_dataset(root):
    """Clips as the generator's manifest lists them (class order, then clip order)."""
    import json

    manifest_path = os.path.join(root or "", "manifest.json")
    if not os.path.isfile(manifest_path):
        raise DatasetError(f"--dataset synthetic: {manifest_path} not found; --root must be a folder written by "
                           f"`m3net make-synthetic` (use --dataset folder for other <class>/<clip> trees)")
    with open(manifest_path) as fh:
        manifest = json.load(fh)
    classes, index, clips = [], {}, []
    for split in SPLITS:
        for entry in (e for e in manifest["clips"] if e["split"] == split):
            if entry["class"] not in index:
                index[entry["class"]] = len(classes)
                classes.append(entry["class"])
            path = os.path.join(root, entry["path"])
            clips.append(Clip(entry["id"], index[entry["class"]], split, path if os.path.exists(path) else None))
    return Dataset("synthetic", root, classes, clips)


def load_dataset(name, root=None, folder_split="test"):
    """The Dataset ``name`` with its clips located under ``root`` (listed datasets: root optional)."""
    if name in LISTED_DATASETS:
        return _listed_dataset(name, root)
    if name == "synthetic":
        return _synthetic_dataset(root)
    if name == "folder":
        return _folder_dataset(name, root, folder_split)
    raise DatasetError(f"--dataset {name}: unknown; expected one of {DATASETS}")


def format_summary(summary):
    """Text for `m3net dataset-info`: listed clips and classes per split; with a root, what is present and
    whether each split can give an episode, and the first missing clips."""
    lines = [f"{summary['dataset']}" + (f" under {summary['root']}" if summary["root"] else "")]
    episode = summary.get("episode")
    if not episode:
        lines += [f"  {split:<5} {e['classes']:>4} classes {e['clips']:>6} clips"
                  for split, e in summary["splits"].items()]
        return "\n".join(lines)
    need = episode["shot"] + episode["queries"]
    queries = f"{episode['queries']} quer{'y' if episode['queries'] == 1 else 'ies'}"
    lines[0] += (f": a {episode['way']}-way {episode['shot']}-shot episode with {queries} per class takes {need} "
                 f"clips of each of {episode['way']} classes")
    lines.append(f"  {'split':<5} {'clips present':>21} {'classes present':>16} {f'classes with {need}+':>16}"
                 "  episodes")
    for split, e in summary["splits"].items():
        lines.append(f"  {split:<5} {e['found']:>9,} of {e['clips']:>8,} {e['classes_found']:>8} of "
                     f"{e['classes']:>4} {e['episode_classes']:>16}  {'yes' if e['forms_episodes'] else 'no'}")
    for split, e in summary["splits"].items():
        if e["missing_examples"]:
            more = e["missing"] - len(e["missing_examples"])
            lines.append(f"  missing in {split}: " + ", ".join(e["missing_examples"])
                         + (f" (+{more:,} more)" if more else ""))
    return "\n".join(lines)
