"""What a listed dataset costs before any work starts: the frames one finetune cell decodes, and the
disk its frame folders (`m3net frames`) and feature caches take. docs/reproducing.md's tables are generated
from here, so the numbers follow the settings and the split lists instead of drifting from them.

Frames per finetune cell are exact for the settings (`--preset paper`): every training episode
decodes way x (shot + queries) clips x frames, every validation the same for its val episodes.
The counting functions (finetune_frames, extract_frames, cache_bytes, frame_folder_bytes) are the one place
these sizes are computed: `--plan` (m3net/plan.py) applies them to the clips present under a --root.
Disk is an estimate, and says what it assumes:
    clips            the shipped split lists (all three splits)
    frames per clip  FineGym ids carry the element's window in whole seconds (…_A_<start>_<end>):
                     their mean x ASSUMED_FPS; Diving48 ids carry no duration: ASSUMED_SECONDS
    bytes per frame  measured on the frame folders `m3net bench-input` wrote (JPEG at crop·8/7)
"""
import dataclasses
import math
from functools import lru_cache

from m3net.data.datasets import LISTED_DATASETS, load_split_lists, parse_clip_id
from m3net.extract.backbone import FEATURE_CHANNELS

ASSUMED_FPS = 30  # the source videos' frame rate: YouTube broadcasts run at 25-30 (some at 50-60)
# Diving48's lists give no clip length. One dive from the approach to the entry: an assumption, not a measurement.
ASSUMED_SECONDS = {"diving48": 4.0}


def cache_bytes(clips, frames, crop=224, views=0):
    """Bytes of the cache's features for ``clips`` done rows: float16 (side x side x 2048) maps, side = crop / 32
    rounded up (7 at 224), per frame and view (HDF5 allocates only the rows written)."""
    side = -(-crop // 32)
    return clips * max(views, 1) * frames * side * side * FEATURE_CHANNELS * 2


CACHE_BYTES_PER_FRAME = cache_bytes(1, 1)  # one float16 7x7x2048 map (m3net extract at crop 224)


def extract_frames(clips, frames, views=0):
    """Frames an extraction of ``clips`` decodes: every view samples its own ``frames``."""
    return clips * max(views, 1) * frames


def frame_folder_bytes(clips, frames_per_clip, bytes_per_frame):
    """Bytes of frame folders holding every frame of ``clips`` clips."""
    return clips * frames_per_clip * bytes_per_frame


@lru_cache(maxsize=None)
def clip_counts(dataset):
    """{split: clips} of the shipped lists."""
    return {split: len(entries) for split, entries in load_split_lists(dataset).items()}


@lru_cache(maxsize=None)
def clip_seconds(dataset):
    """(mean clip length in seconds, where it comes from)."""
    if dataset in ASSUMED_SECONDS:
        return ASSUMED_SECONDS[dataset], "assumed: the lists carry no duration"
    ids = [clip_id for entries in load_split_lists(dataset).values() for _, clip_id in entries]
    windows = [parse_clip_id(dataset, clip_id) for clip_id in ids]
    mean = sum(w["action_end"] - w["action_start"] for w in windows) / len(windows)
    return mean, "mean of the ids' element windows, whole seconds"


def paper_finetune_config(shot):
    """The FinetuneConfig `--preset paper` runs at ``shot`` (m3net's defaults where the preset is silent)."""
    from m3net.train.finetune import FinetuneConfig
    from m3net.train.presets import preset_values

    return FinetuneConfig(dataset=LISTED_DATASETS[0], root="", shot=shot, preset="paper",
                          **preset_values("finetune", "paper"))


def finetune_frames(config):
    """{"train", "validation"}: frames a finetune run with ``config`` decodes (whatever the dataset; --episodes
    counts all torchrun ranks), and "validations", how many times it validates."""
    train = config.episodes * config.way * (config.shot + config.queries) * config.frames
    validations = math.ceil(config.episodes / config.val_every) if config.val_episodes else 0
    validation = validations * config.val_episodes * config.way * (config.shot + config.val_queries) * config.frames
    return {"train": train, "validation": validation, "validations": validations}


@dataclasses.dataclass(frozen=True)
class DiskEstimate:
    dataset: str
    clips: int
    test_clips: int
    seconds_per_clip: float
    seconds_source: str
    frames_per_clip: float
    frames: float  # every clip's frames
    frame_bytes: float  # frame folders of every clip
    cache_bytes: float  # cache of every clip (T frames each)
    test_cache_bytes: float


def disk_estimate(dataset, bytes_per_frame, cache_frames=8):
    """The frame folders and caches of every clip of ``dataset``'s lists, at ``bytes_per_frame`` per JPEG."""
    counts = clip_counts(dataset)
    clips = sum(counts.values())
    seconds, source = clip_seconds(dataset)
    frames_per_clip = seconds * ASSUMED_FPS
    return DiskEstimate(dataset, clips, counts["test"], seconds, source, frames_per_clip, clips * frames_per_clip,
                        frame_folder_bytes(clips, frames_per_clip, bytes_per_frame), cache_bytes(clips, cache_frames),
                        cache_bytes(counts["test"], cache_frames))
