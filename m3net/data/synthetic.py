"""The generated fine-grained benchmark: rendered clips whose classes differ in the order and small
details of their sub-actions, written as real mp4 files in the folder layout

    <out>/{train,val,test}/<class>/<clip_id>.mp4      + <out>/manifest.json

A clip is a sequence of ``phases`` sub-actions (like a dive: take-off, somersault, twist, entry).
Each sub-action type is a large, strongly coloured and textured shape with its own motion, so the
types differ in what survives a global average pool of *random-weight* ResNet-50 features (the
offline demo has no ImageNet weights); position alone would not survive the pool. Each type has
two variants (the "detail": texture twice as fine, motion reversed).

Classes come in families that share one multiset of sub-actions:
    members 0..F-2   the same sub-actions in different orders, chosen so that every two members
                     differ at every phase position (rows of a Latin square) -> "order" classes.
                     Their mean-pooled features are identical up to nuisance, so a mean-pooled
                     prototype cannot tell them apart while temporal matching can.
    member F-1       (families of 3 or more) member 0 with one phase's variant flipped -> "detail".
Whole families go to one split, so train/val/test classes are disjoint and every split with a
family of two or more holds order-only pairs. The sub-action vocabulary is shared by all splits,
as the dives' vocabulary is in Diving48.

Nuisance per clip: background (two muted colours, gradient direction, smooth blotches), object
scale and position, colour gain, speed (phase durations and motion rate), start offset (empty
lead-in / lead-out), pixel noise. Every random choice comes from the seed: the class list from
SeedSequence([seed, 0]), each clip's parameters from SeedSequence([seed, 1, class, clip]); the
parameters are stored in the manifest, so frames can be re-rendered from it.

Tempo (SyntheticConfig.tempo, default 0.8): each clip speeds up or slows down across its sub-actions
(phase p lasts in proportion to r^p, log r uniform in [-tempo, tempo]), so frame t of two clips of one
class often shows different phases (the sampled frames agree on the phase 45% of the time at 0.8, 79%
at 0): a benchmark that tests alignment, not only order. The price: in about 1 clip of 4 the shortest
phase falls between the 8 sampled frames.

Validation (``python tools/validate_synthetic.py --seeds 0,1,2``; random-weight ResNet-50, seed 0,
frames resized to 224, ImageNet-normalised, globally pooled; CPU, 2 cores), default config (tempo 0.8),
benchmark seeds 0, 1, 2 (those of ``m3net demo --seeds 0,1,2``), 2000 seeded episodes each; mean over the
seeds, each seed's value in brackets:
    (a) single frames under nuisance (20 per type and variant), leave-one-out 1-NN (cosine):
        6 sub-action types 0.96 (chance 0.17); the 2 variants within a type 0.94 (chance 0.50;
        0.83 for the weakest type, somersault, at seed 0)
    (b) test split (8 classes = 2 families), 8 centre frames per clip:
                            mean-pooled prototype   diagonal (frame t to t)   hard DTW (cosine)
        5-way 1-shot         0.26 (0.26 0.29 0.24)    0.40 (0.39 0.40 0.40)    0.51 (0.48 0.50 0.54)
        5-way 5-shot         0.34 (0.32 0.39 0.30)    0.56 (0.56 0.59 0.55)    0.72 (0.68 0.70 0.77)
        order-only pairs     0.49 (0.47 0.49 0.52)    0.67 (0.65 0.67 0.68)    0.75 (0.72 0.72 0.80)
        (2-way 1-shot)
    The targets, on the mean: mean pooling near chance (met), the diagonal 10 points below hard DTW at
    1-shot (met: 11.1 points; per seed 9.5, 9.7, 14.0, so one benchmark alone can fall short; 15 at
    5-shot), single-frame types >= 0.9 (met in every seed). Other tempo designs tried on seed 0's
    features (random phase shares, one slow phase, a random lead-in, floors on each share) gave 4-10
    points at 1-shot: DTW loses accuracy as fast as the diagonal once phases vanish between the sampled
    frames.
    At tempo 0 (generator version 1, equal phases): 1-shot 0.26 / 0.64 / 0.64, 5-shot 0.32 / 0.84 /
    0.84, order-only pairs 0.46 / 0.88 / 0.87: every phase lasts equally long, so the diagonal
    matches DTW. Earlier, shapes of radius 0.75 instead of 0.85 and a dark-only texture: types
    0.92, variants 0.53 (invisible), 1-shot 0.25 / 0.55 / 0.54: hence large shapes and a light
    texture for variant b.
"""
import json
import os
import shutil
from dataclasses import asdict, dataclass, fields
from itertools import permutations
from math import comb

import numpy as np

from m3net._version import __version__
from m3net.config import setting
from m3net.data.episodes import SPLITS
from m3net.errors import ConfigError

# Bump when the rendering or the class construction changes: a manifest written by another
# generator version is not reused.
GENERATOR_VERSION = 2  # 2: within-class tempo (SyntheticConfig.tempo)
MANIFEST = "manifest.json"
CODECS = ("libx264", "mpeg4")
VARIANTS = ("a", "b")


@dataclass(frozen=True)
class SubActionType:
    name: str
    colour: tuple  # RGB of the shape; the texture's second colour is a dark (variant a) or light (b) shade
    shape: str
    texture: str
    motion: str


# Six types that differ in colour, shape, texture and motion at once. Saturated primaries on
# muted backgrounds keep them apart in globally pooled random-ResNet features (see (a) above).
SUBACTIONS = (
    SubActionType("takeoff", (225, 35, 30), "disc", "rings", "rise"),
    SubActionType("pike", (30, 190, 45), "square", "hstripes", "rotate"),
    SubActionType("tuck", (35, 70, 235), "triangle", "checker", "pulse"),
    SubActionType("twist", (240, 215, 25), "star", "dstripes", "spin"),
    SubActionType("somersault", (215, 35, 215), "ring", "dots", "orbit"),
    SubActionType("entry", (25, 205, 215), "cross", "vstripes", "swing"),
)
TYPE_NAMES = tuple(t.name for t in SUBACTIONS)


@dataclass(frozen=True)
class SyntheticConfig:
    seed: int = setting(0, "Every class and clip is a function of it.")
    train_classes: int = setting(12, "Training classes.")
    val_classes: int = setting(5, "Validation classes.")
    test_classes: int = setting(8, "Test classes.")
    clips_per_class: int = setting(12, "Clips per class.")
    frames: int = setting(24, "Frames per clip.")
    size: int = setting(128, "Frame height and width in pixels (a multiple of 32).")
    fps: int = setting(12, "Frames per second of the mp4 files.")
    phases: int = setting(4, "Sub-actions per clip.")
    family_size: int = setting(4, "Classes sharing one multiset of sub-actions (orders + one detail variant).")
    tempo: float = setting(0.8, "Tempo variation within a class: each clip speeds up or slows down across its "
                           "sub-actions, phase p lasting in proportion to r^p with log r drawn uniformly from "
                           "[-tempo, tempo], so frame t of two clips of one class shows different phases and only a "
                           "matcher that aligns them (DTW) compares like with like. 0 = equal phases up to a +-25% "
                           "jitter (the benchmark before this setting).", minimum=0, maximum=2)
    codec: str = setting("libx264", "Video codec.", choices=CODECS)

    def validate(self):
        def need(ok, option, expected):
            if not ok:
                raise ConfigError(f"make-synthetic: --{option.replace('_', '-')} {getattr(self, option)}: "
                                  f"expected {expected}.")

        for split in SPLITS:
            need(getattr(self, f"{split}_classes") >= 1, f"{split}_classes", "at least 1 class")
        need(self.clips_per_class >= 1, "clips_per_class", "at least 1")
        need(self.phases >= 2 and self.phases <= len(SUBACTIONS), "phases", f"2..{len(SUBACTIONS)}")
        need(self.frames >= 2 * self.phases, "frames", f"at least 2 per phase ({2 * self.phases})")
        # Multiples of 32 only: decord 0.6 fails to read back some other small widths (48, 72).
        need(self.size >= 32 and self.size % 32 == 0, "size", "a multiple of 32 pixels (32, 64, 96, 128, ...)")
        need(self.fps >= 1, "fps", "at least 1")
        need(2 <= self.family_size <= self.phases + 1, "family_size", f"2..phases+1 ({self.phases + 1})")
        need(self.codec in CODECS, "codec", " or ".join(CODECS))
        number = isinstance(self.tempo, (int, float)) and not isinstance(self.tempo, bool)
        need(number and 0 <= self.tempo <= 2, "tempo", "a number in 0..2")
        # Every family has its own multiset of (type, variant): there must be enough of them.
        families = sum(-(-getattr(self, f"{s}_classes") // self.family_size) for s in SPLITS)
        multisets = comb(len(SUBACTIONS), self.phases) * len(VARIANTS) ** self.phases
        need(families <= multisets, "family_size",
             f"at most one family per distinct sub-action set: {families} families needed, {multisets} sets exist; "
             "use fewer classes, other --phases or a larger --family-size")


# ---------------------------------------------------------------------------------------------
# Classes: families of orders + one detail sibling


def _order_members(rng, base, count):
    """``count`` orderings of ``base`` (a list of sub-actions), every two of them different at
    every position; among those, prefer orderings sharing few adjacent pairs with the chosen ones
    (so DTW cannot align long common runs)."""
    def adjacent(order):
        return set(zip(order, order[1:]))

    n = len(base)
    chosen = [tuple(rng.permutation(n))]
    candidates = list(permutations(range(n)))
    while len(chosen) < count:  # a Latin rectangle with fewer than n rows always extends
        ok = [p for p in candidates if all(all(a != b for a, b in zip(p, c)) for c in chosen)]
        shared = [sum(len(adjacent(p) & adjacent(c)) for c in chosen) for p in ok]
        best = [p for p, s in zip(ok, shared) if s == min(shared)]
        chosen.append(best[rng.integers(len(best))])
    return [[base[i] for i in p] for p in chosen]


def build_classes(config):
    """The class list: dicts with name, split, family, relation and sequence [[type, variant]]."""
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 0]))
    classes, used_multisets, family = [], set(), 0
    for split in SPLITS:
        remaining = getattr(config, f"{split}_classes")
        while remaining > 0:
            size = min(config.family_size, remaining)
            while True:  # every family its own multiset of (type, variant)
                types = sorted(rng.choice(len(SUBACTIONS), config.phases, replace=False).tolist())
                base = [[TYPE_NAMES[t], VARIANTS[rng.integers(2)]] for t in types]
                key = tuple(map(tuple, base))
                if key not in used_multisets:
                    used_multisets.add(key)
                    break
            n_orders = size - 1 if size >= 3 else size
            sequences = [(seq, "order") for seq in _order_members(rng, base, n_orders)]
            if size >= 3:
                detail = [list(step) for step in sequences[0][0]]
                phase = int(rng.integers(config.phases))
                detail[phase][1] = VARIANTS[1 - VARIANTS.index(detail[phase][1])]
                sequences.append((detail, "detail"))
            for seq, relation in sequences:
                classes.append({
                    "name": "_".join(f"{t}-{v}" for t, v in seq),
                    "split": split,
                    "family": family,
                    "relation": relation,
                    "sequence": seq,
                })
            family += 1
            remaining -= size
    return classes


def order_only_pairs(classes, split=None):
    """Pairs of class names (optionally within one split) made of the same multiset of
    sub-actions in a different order: a mean-pooled prototype cannot separate them."""
    chosen = [c for c in classes if split is None or c["split"] == split]
    pairs = []
    for i, a in enumerate(chosen):
        for b in chosen[i + 1:]:
            same_multiset = sorted(map(tuple, a["sequence"])) == sorted(map(tuple, b["sequence"]))
            if same_multiset and a["sequence"] != b["sequence"]:
                pairs.append((a["name"], b["name"]))
    return pairs


# ---------------------------------------------------------------------------------------------
# Per-clip nuisance parameters


def clip_params(config, class_index, clip_index):
    """The nuisance of one clip, JSON-serialisable; a pure function of (seed, class, clip)."""
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 1, class_index, clip_index]))
    return random_clip_params(rng, config.phases, config.tempo)


def random_clip_params(rng, phases, tempo=0.0):
    """One clip's nuisance drawn from ``rng``; ``tempo`` (0..2) is SyntheticConfig.tempo."""
    grey = rng.uniform(60, 190, size=2)
    background = [np.clip(g + rng.uniform(-30, 30, size=3), 0, 255).round().tolist() for g in grey]
    jitter = rng.uniform(0.75, 1.25, size=phases)
    params = {
        "background": background,  # two RGB colours of the gradient
        "gradient_angle": float(rng.uniform(0, 2 * np.pi)),
        "blotch_seed": int(rng.integers(2**31)),
        "blotch_amplitude": float(rng.uniform(5, 20)),
        "lead_in": float(rng.uniform(0, 0.1)),  # share of the clip before the first sub-action
        "lead_out": float(rng.uniform(0, 0.1)),
        "durations": None,  # shares of the active span, below
        "speed": float(rng.uniform(0.8, 1.25)),  # motion rate within a sub-action
        "scale": float(rng.uniform(0.8, 1.1)),
        "offset": rng.uniform(-0.12, 0.12, size=2).tolist(),  # object centre (x, y), frame = [-1, 1]
        "gain": float(rng.uniform(0.85, 1.1)),
        "start_angle": float(rng.uniform(-0.3, 0.3)),
        "noise_sigma": float(rng.uniform(2, 8)),
        "noise_seed": int(rng.integers(2**31)),
    }
    # Drawn last, so every other parameter (and at tempo 0 every value) is that of generator version 1:
    # tempo moves the phase boundaries and nothing else. A steady acceleration (or deceleration) keeps the
    # order and every phase, yet shifts the boundaries by up to a phase or two: what DTW undoes and a
    # frame-by-frame match cannot.
    rate = np.exp(rng.uniform(-tempo, tempo))
    durations = jitter * rate ** np.arange(phases)
    params["durations"] = (durations / durations.sum()).tolist()
    return params


# ---------------------------------------------------------------------------------------------
# Rendering (numpy, float32 in [0, 255])


def _grid(size):
    axis = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1
    y, x = np.meshgrid(axis, axis, indexing="ij")  # (H, W), x right, y down
    return x, y


def render_background(params, size):
    x, y = _grid(size)
    angle = params["gradient_angle"]
    ramp = (np.cos(angle) * x + np.sin(angle) * y) * 0.5 + 0.5  # (H, W) in [0, 1]
    c0, c1 = (np.asarray(c, dtype=np.float32) for c in params["background"])
    image = c0 * (1 - ramp[..., None]) + c1 * ramp[..., None]  # (H, W, 3)
    # Smooth blotches: an 5x5 random grid, bilinearly upsampled.
    coarse = np.random.default_rng(params["blotch_seed"]).standard_normal((5, 5, 3)).astype(np.float32)
    pos = (np.arange(size, dtype=np.float32) + 0.5) / size * 4
    i0 = np.minimum(pos.astype(int), 3)
    f = pos - i0
    rows = coarse[i0] * (1 - f)[:, None, None] + coarse[i0 + 1] * f[:, None, None]  # (H, 5, 3)
    smooth = rows[:, i0] * (1 - f)[None, :, None] + rows[:, i0 + 1] * f[None, :, None]  # (H, W, 3)
    return image + params["blotch_amplitude"] * smooth


def _motion(kind, u, direction, speed):
    """(centre x, centre y, angle, scale factor) of a sub-action at progress u in [0, 1]."""
    s = u * speed
    if kind == "rise":
        return 0.0, direction * (0.25 - 0.5 * min(s, 1.0)), 0.0, 1.0
    if kind == "rotate":
        return 0.0, 0.0, direction * s * np.pi / 2, 1.0
    if kind == "pulse":
        return 0.0, 0.0, 0.0, 1.0 + 0.18 * np.sin(2 * np.pi * s * direction)
    if kind == "spin":
        return 0.0, 0.0, direction * s * 2 * np.pi / 5 * 1.5, 1.0
    if kind == "orbit":
        a = direction * 2 * np.pi * s
        return 0.2 * np.cos(a), 0.2 * np.sin(a), 0.0, 1.0
    if kind == "swing":
        return 0.0, 0.0, direction * 0.6 * np.sin(2 * np.pi * s), 1.0
    raise ValueError(f"unknown motion {kind!r}")


def _shape_mask(shape, p, q, radius):
    r = np.hypot(p, q)
    if shape == "disc":
        return r < radius
    if shape == "square":
        return np.maximum(np.abs(p), np.abs(q)) < radius * 0.85
    if shape == "triangle":
        inside = np.ones_like(p, dtype=bool)
        for a in (np.pi / 2, np.pi / 2 + 2 * np.pi / 3, np.pi / 2 + 4 * np.pi / 3):
            inside &= np.cos(a) * p + np.sin(a) * q < radius * 0.55
        return inside
    if shape == "star":
        return r < radius * (0.62 + 0.38 * np.cos(5 * np.arctan2(q, p)))
    if shape == "ring":
        return (r < radius) & (r > radius * 0.5)
    if shape == "cross":
        arm = radius * 0.32
        return ((np.abs(p) < arm) & (np.abs(q) < radius)) | ((np.abs(q) < arm) & (np.abs(p) < radius))
    raise ValueError(f"unknown shape {shape!r}")


def _texture(texture, p, q, frequency):
    """1 where the shape takes its dark second colour. Coordinates are the shape's own, so the
    texture turns and scales with it."""
    w = 2 * np.pi * frequency
    if texture == "rings":
        return np.sin(w * np.hypot(p, q)) > 0
    if texture == "hstripes":
        return np.sin(w * q) > 0
    if texture == "vstripes":
        return np.sin(w * p) > 0
    if texture == "dstripes":
        return np.sin(w * (p + q) / np.sqrt(2)) > 0
    if texture == "checker":
        return np.sin(w * p) * np.sin(w * q) > 0
    if texture == "dots":
        return np.sin(w * p) * np.sin(w * q) > 0.5
    raise ValueError(f"unknown texture {texture!r}")


def render_subaction(canvas, type_name, variant, u, params):
    """Draw one sub-action at progress u (0..1) onto canvas (H, W, 3), in place."""
    kind = SUBACTIONS[TYPE_NAMES.index(type_name)]
    detail = VARIANTS.index(variant)  # variant b: texture twice as fine, motion reversed
    cx, cy, angle, grow = _motion(kind.motion, u, 1 - 2 * detail, params["speed"])
    angle += params["start_angle"]
    x, y = _grid(canvas.shape[0])
    dx = x - cx - params["offset"][0]
    dy = y - cy - params["offset"][1]
    scale = params["scale"] * grow
    p = (np.cos(angle) * dx + np.sin(angle) * dy) / scale  # shape's own coordinates
    q = (-np.sin(angle) * dx + np.cos(angle) * dy) / scale
    mask = _shape_mask(kind.shape, p, q, radius=0.85)
    dark = _texture(kind.texture, p, q, frequency=1.6 * (1 + detail))
    colour = np.asarray(kind.colour, dtype=np.float32) * params["gain"]
    second = colour * 0.3 if detail == 0 else colour * 0.35 + 165  # variant b: light texture
    shade = np.where(dark[..., None], second, colour)  # (H, W, 3)
    canvas[mask] = shade[mask]


def phase_at(t, frames, params):
    """(phase index, progress in phase) of frame t, or None in the lead-in / lead-out."""
    s = (t + 0.5) / frames
    start, end = params["lead_in"], 1 - params["lead_out"]
    if not start <= s < end:
        return None
    s = (s - start) / (end - start)
    bounds = np.cumsum(params["durations"])
    phase = min(int(np.searchsorted(bounds, s, side="right")), len(bounds) - 1)
    begin = bounds[phase - 1] if phase else 0.0
    return phase, float((s - begin) / (bounds[phase] - begin))


def render_frame(background, step, u, params, noise_rng):
    """One uint8 frame: ``step`` = [type, variant] at progress u over the background, or the
    background alone when step is None; plus this clip's pixel noise."""
    canvas = background.copy()
    if step is not None:
        render_subaction(canvas, *step, u, params)
    canvas += noise_rng.normal(0, params["noise_sigma"], canvas.shape).astype(np.float32)
    return np.clip(canvas, 0, 255).round().astype(np.uint8)


def render_clip(sequence, params, frames, size):
    """(frames, size, size, 3) uint8 of a clip with sub-actions ``sequence`` [[type, variant]]."""
    background = render_background(params, size)
    noise_rng = np.random.default_rng(params["noise_seed"])
    clip = np.empty((frames, size, size, 3), dtype=np.uint8)
    for t in range(frames):
        where = phase_at(t, frames, params)
        step, u = (None, 0.0) if where is None else (sequence[where[0]], where[1])
        clip[t] = render_frame(background, step, u, params, noise_rng)
    return clip


# ---------------------------------------------------------------------------------------------
# Writing


def rgb_to_yuv420p(frame):
    """(H, W, 3) uint8 RGB -> (3H/2, W) uint8 planar yuv420p, BT.601 limited range (what decoders
    assume for untagged streams). Done here so the encoder's input is exactly defined by the
    frames, whatever swscale build PyAV ships."""
    rgb = frame.astype(np.float32)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    u = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    v = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
    h, w = y.shape
    u, v = (c.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3)) for c in (u, v))  # 2x2 chroma
    planes = np.concatenate([y.ravel(), u.ravel(), v.ravel()])
    return np.clip(np.round(planes), 0, 255).astype(np.uint8).reshape(h * 3 // 2, w)


def write_mp4(path, clip, fps, codec):
    """Encode (T, H, W, 3) uint8 to an mp4 that decord and PyAV both read back frame for frame."""
    import av

    with av.open(path, "w", format="mp4") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = clip.shape[2], clip.shape[1]
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            # Near-lossless constant quantiser, single-threaded: the same frames give the same
            # bytes. (crf mode is not deterministic here: x264's mb-tree lookahead gave
            # run-to-run differences even with threads=1.)
            stream.options = {"qp": "12", "preset": "veryfast", "threads": "1"}
        if codec == "mpeg4":
            stream.options = {"qscale": "2", "threads": "1"}
        for index, frame in enumerate(clip):
            yuv = av.VideoFrame.from_ndarray(rgb_to_yuv420p(frame), format="yuv420p")
            yuv.pts = index
            for packet in stream.encode(yuv):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _clip_entries(config, classes):
    entries = []
    for class_index, cls in enumerate(classes):
        for clip_index in range(config.clips_per_class):
            clip_id = f"syn{class_index:03d}_{clip_index:03d}"
            entries.append({
                "id": clip_id,
                "class": cls["name"],
                "split": cls["split"],
                "path": f"{cls['split']}/{cls['name']}/{clip_id}.mp4",
                "frames": config.frames,
                "params": clip_params(config, class_index, clip_index),
            })
    return entries


def build_manifest(config):
    """Everything that defines the benchmark, before any file is written."""
    classes = build_classes(config)
    manifest = {
        "generator": "m3net.data.synthetic",
        "generator_version": GENERATOR_VERSION,
        "m3net_version": __version__,
        "seed": config.seed,
        "config": asdict(config),
        "subaction_types": [asdict(t) for t in SUBACTIONS],
        "variants": {"a": "base", "b": "texture twice as fine, motion reversed"},
        "splits": {s: [c["name"] for c in classes if c["split"] == s] for s in SPLITS},
        "classes": classes,
        "order_only_pairs": {s: order_only_pairs(classes, s) for s in SPLITS},
        "clips": _clip_entries(config, classes),
        "complete": False,
    }
    return json.loads(json.dumps(manifest))  # plain JSON types, equal to what load_manifest gives


def load_manifest(out):
    with open(os.path.join(out, MANIFEST)) as fh:
        return json.load(fh)


def _write_manifest(out, manifest):
    tmp = os.path.join(out, MANIFEST + ".partial")
    with open(tmp, "w") as fh:
        json.dump(manifest, fh, indent=1)
    os.replace(tmp, os.path.join(out, MANIFEST))


def _check_existing(out, manifest, overwrite):
    """'reuse', 'resume' or 'fresh' for ``out``; refuse to touch folders that are not ours."""
    path = os.path.join(out, MANIFEST)
    if not os.path.isdir(out) or not os.listdir(out):
        return "fresh"
    if not os.path.isfile(path):
        raise ConfigError(
            f"make-synthetic --out {out}: the folder is not empty and has no {MANIFEST} from "
            f"m3net make-synthetic; choose a new or empty folder."
        )
    try:
        old = load_manifest(out)
    except (OSError, ValueError) as err:
        old = {"config": None, "generator_version": None, "error": str(err)}
    differences = [
        f"{field.name}: {old['config'].get(field.name)!r} there, {manifest['config'][field.name]!r} asked"
        for field in fields(SyntheticConfig)
        if isinstance(old.get("config"), dict) and old["config"].get(field.name) != manifest["config"][field.name]
    ]
    if old.get("config") is None:
        differences.append(f"{MANIFEST} unreadable ({old.get('error')})")
    if old.get("generator_version") != GENERATOR_VERSION:
        differences.append(f"generator_version: {old.get('generator_version')!r} there, {GENERATOR_VERSION} here")
    if differences:
        if not overwrite:
            raise ConfigError(
                f"make-synthetic --out {out}: holds a benchmark generated differently ("
                + "; ".join(differences) + "). Pass --overwrite to replace it, or choose another --out."
            )
        for name in (*SPLITS, MANIFEST):
            target = os.path.join(out, name)
            if os.path.isdir(target):
                shutil.rmtree(target)
            elif os.path.exists(target):
                os.remove(target)
        return "fresh"
    missing = [c["path"] for c in manifest["clips"] if not os.path.isfile(os.path.join(out, c["path"]))]
    return "reuse" if old.get("complete") and not missing else "resume"


def generate_synthetic(out, config=SyntheticConfig(), overwrite=False, progress=True):
    """Write the benchmark to ``out``; returns (manifest, status) with status 'reused',
    'resumed' or 'generated'. A complete earlier run with the same config is reused as is; an
    interrupted one is finished (clips are written atomically, so existing files are whole)."""
    from m3net.progress import progress_bar

    config.validate()
    manifest = build_manifest(config)
    state = _check_existing(out, manifest, overwrite)
    if state == "reuse":
        return load_manifest(out), "reused"
    os.makedirs(out, exist_ok=True)
    _write_manifest(out, manifest)  # complete: False until every clip is on disk
    sequences = {c["name"]: c["sequence"] for c in manifest["classes"]}
    for entry in progress_bar(manifest["clips"], desc="make-synthetic", unit="clip", enabled=progress):
        path = os.path.join(out, entry["path"])
        if os.path.isfile(path):
            continue
        os.makedirs(os.path.dirname(path), exist_ok=True)
        clip = render_clip(sequences[entry["class"]], entry["params"], config.frames, config.size)
        partial = path + ".partial"
        write_mp4(partial, clip, config.fps, config.codec)
        os.replace(partial, path)
    manifest["complete"] = True
    _write_manifest(out, manifest)
    return manifest, ("resumed" if state == "resume" else "generated")
