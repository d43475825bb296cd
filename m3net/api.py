"""The Python API, importable from the top level (``import m3net`` loads it on first use):

    clf = m3net.FewShotClassifier.from_checkpoint("runs/gym99-1shot/best.pt", device="cpu")
    clf.fit({"vault": ["a.mp4", "b.mp4"], "beam": ["c/", "d/"]})  # class -> clips (paths, frame folders, arrays)
    preds = clf.predict(["q1.mp4", frames])                       # [Prediction]: label, probabilities, views
    cache = m3net.open_cache("caches/gym99.h5")                   # read-only FeatureCache
    head = m3net.create_head("m3net", proj_dim=128)               # the head registry, options as --head-opt

Clips take the very path of `m3net extract` (``ClipViews``: TSN segment centres and the test transform;
``Extractor``: forwards of a fixed ``batch_size`` clips at the cache's precision), so a clip's features
equal its cache row and it scores the same here, through `m3net predict` (a thin wrapper over
``FewShotClassifier``) and from the cache (``predict_features``). Errors are ``M3NetError``s.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Union

import numpy as np
import torch

from m3net.cache.reader import RowReader, load_cache
from m3net.cache.schema import CacheError
from m3net.data.datasets import class_clips
from m3net.data.episodes import SPLITS
from m3net.errors import CheckpointError, ConfigError, NonFiniteError, PredictError, WeightsError
from m3net.extract.backbone import (
    FEATURE_CHANNELS,
    IMAGENET_FILES,
    build_backbone,
    canonical_weights_name,
    file_sha256,
    resolve_weights_file,
)
from m3net.extract.loop import (
    ClipViews,
    ExtractConfig,
    Extractor,
    clip_loader,
    map_side,
    resolve_precision,
    view_transform,
)
from m3net.extract.transforms import TransformConfig
from m3net.model.base import FewShotHead
from m3net.model.registry import build_head
from m3net.progress import progress_bar
from m3net.runtime import resolve_device
from m3net.train.checkpoint import check_features
from m3net.train.evaluate import load_trained_head
from m3net.train.features import InputNorm, input_norm_for

# A clip: a video file or a frame folder (path), or frames already decoded into uint8 (T, H, W, 3).
ClipSource = Union[str, os.PathLike, np.ndarray]

__all__ = ["ClipSource", "FeatureCache", "FewShotClassifier", "Prediction", "create_head", "open_cache"]


def create_head(name: str, **options) -> FewShotHead:
    """A few-shot head from the registry (`m3net heads` lists them), untrained. Options are typed and checked
    as ``--head-opt`` parses them: ``create_head("m3net", use_tm=False)`` and ``use_tm="off"`` are the same;
    a wrong name, type or range is a ``ConfigError`` naming the option. ``feature_dim`` and ``num_frames``
    (C and T of the features it reads) default to the ResNet-50's 2048 channels and 8 frames."""
    return build_head(name, **options)


@dataclasses.dataclass(frozen=True)
class Prediction:
    """One query clip's prediction."""

    query: str  # the path as given, or "array #i" for the i-th query given as frames
    label: str  # the most likely class
    probabilities: dict[str, float]  # every class, most likely first; they sum to 1
    views: dict[str, dict[str, float]]  # {view: {class: p}} for every view the head outputs, "y" = probabilities


def _is_path(source) -> bool:
    return isinstance(source, (str, os.PathLike))


def check_exist(sources: Sequence[ClipSource]) -> None:
    """Every path among ``sources`` exists, or a PredictError lists those that do not."""
    missing = [os.fspath(s) for s in sources if _is_path(s) and not os.path.exists(s)]
    if missing:
        raise PredictError(f"no such file(s): {', '.join(missing)}")


def _clip_list(clips, what: str) -> list:
    """``clips`` as a list of clips; one clip where a list was expected is an error, not a list of characters."""
    if _is_path(clips) or (isinstance(clips, np.ndarray) and clips.ndim == 4):
        raise PredictError(f"{what}: expected a list of clips, got one clip; write [{clips!r:.60}]")
    return list(clips)


def support_folder(root: str | os.PathLike) -> dict[str, list[str]]:
    """{class: [clip paths]} of a ``<root>/<class>/<clip>`` folder; a class folder without clips maps to []."""
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise PredictError(f"support {root}: no such folder (expected <class>/<clip> inside)")
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)) and not d.startswith("."))
    return {name: [path for _, path in class_clips(os.path.join(root, name))] for name in classes}


def _classes(support, where: str) -> list[tuple[str, object]]:
    """[(class name, its clips or features)] of a support mapping."""
    if not isinstance(support, Mapping):
        raise PredictError(f"{where}: expected {{class: [clips]}} or a <class>/<clip> folder, got "
                           f"{type(support).__name__}")
    return [(str(name), items) for name, items in support.items()]


def _check_shots(support: dict, where: str) -> None:
    """Refuses a class without clips and classes of different shot counts."""
    counts = {name: len(clips) for name, clips in support.items()}
    expected = "expected the same number of clips (the shot, e.g. 1-5) in each of at least 2 classes"
    empty = [name for name, count in counts.items() if count == 0]
    if empty:
        raise PredictError(f"{where}: class(es) {', '.join(map(repr, empty))} have no clips; {expected}; "
                           f"found {counts}")
    if len(counts) < 2 or len(set(counts.values())) != 1:
        raise PredictError(f"{where}: {expected}; found {counts}")


class FewShotClassifier:
    """A trained few-shot head with the backbone its cache was extracted with: ``fit`` a support set of a few
    labelled clips per class once, then ``predict`` any number of query clips (scikit-learn's fit/predict).

    ``head`` is a head from ``create_head`` or a checkpoint (``from_checkpoint``, the usual way);
    ``backbone`` a weights name as `m3net extract --weights` takes it (imagenet, imagenet-v2, random, PATH)
    or a ResNet-50 trunk module. Features are the cache's: T = the head's ``num_frames`` segment-centre
    frames, resized to crop·8/7 and centre-cropped to ``crop``. Every backbone forward holds ``batch_size``
    clips (a short batch is padded), which keeps a clip's features bit-identical to its cache row; for a
    single query a smaller ``batch_size`` is faster (its features then may differ from the cache's by rounding).
    ``workers`` DataLoader processes decode clips (0: in this process).
    """

    def __init__(self, head: FewShotHead, backbone: str | torch.nn.Module = "imagenet", *, crop: int = 224,
                 device: str | torch.device = "auto", precision: str = "auto", batch_size: int | None = None,
                 workers: int = 0, progress: bool = False):
        self.device = resolve_device(device)
        width = head.config.feature_dim
        if width != FEATURE_CHANNELS:
            raise PredictError(f"head {head.name!r} reads features of width C={width}; the ResNet-50 backbone gives "
                               f"C={FEATURE_CHANNELS} (a head trained on another backbone's cache cannot score clips)")
        self.head = head.to(self.device).eval()
        model = build_backbone(backbone)[0] if isinstance(backbone, str) else backbone
        self.transform = view_transform(crop)
        self.batch_size = batch_size or ExtractConfig.__dataclass_fields__["batch_size"].default
        self.workers, self.progress = workers, progress
        self.precision = resolve_precision(precision, self.device)
        self.extractor = Extractor(model, self.device, self.precision, self.batch_size, self.transform)
        # (T, H, W, C) of one clip's features, as `m3net extract` writes them
        self.feature_shape = (head.config.num_frames, map_side(crop), map_side(crop), width)
        self.provenance: dict = {}  # from_checkpoint: the provenance of the cache the checkpoint's head expects
        self.input_norm = InputNorm()  # from_checkpoint: the checkpoint's --input-norm with its statistics
        self.classes: list[str] = []
        self._support: torch.Tensor | None = None  # (S, T, H, W, C) on the device
        self._support_labels: torch.Tensor | None = None  # (S,) index into classes

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, *, weights: str | None = None,
                        device: str | torch.device = "auto", precision: str = "auto", batch_size: int | None = None,
                        workers: int = 0, progress: bool = False, input_norm: str = "auto") -> FewShotClassifier:
        """The head of a `m3net train-head` or `m3net finetune` checkpoint with the backbone, frames, transform,
        batch size and (where the device runs it) precision its cache was extracted with, and the input
        normalisation it was trained with (``input_norm``: "auto", or that very choice; another is refused).
        ``weights``: the backbone file when it is no longer where the cache found it (checked by sha256)."""
        path = os.fspath(path)
        device = resolve_device(device)
        head, state = load_trained_head(path, device)
        norm = input_norm_for(input_norm, [(path, state)])  # refused before any backbone is built
        provenance = state["provenance"]
        crop = int(provenance["crop"])
        side = map_side(crop)  # so is a head built for other features than the backbone's
        check_features(state, path, (head.config.num_frames, side, side, FEATURE_CHANNELS),
                       f"the ResNet-50 maps of its cache's backbone ({provenance['weights']}, crop {crop})")
        transform = TransformConfig(resize=tuple(provenance["resize"]), crop=crop, mean=tuple(provenance["mean"]),
                                    std=tuple(provenance["std"]))
        if transform != view_transform(crop):
            raise CheckpointError(f"{path}: its cache was extracted with the transform {transform}, which m3net "
                                  f"does not make (expected {view_transform(crop)})")
        if precision == "auto":
            precision = _cache_precision(provenance.get("precision"), device)
        classifier = cls(head, checkpoint_backbone(path, provenance, weights), crop=crop, device=device,
                         precision=precision, batch_size=batch_size or provenance.get("batch_size"),
                         workers=workers, progress=progress)
        classifier.provenance, classifier.input_norm = provenance, norm
        return classifier

    def __repr__(self) -> str:
        return (f"FewShotClassifier(head={self.head.name!r}, classes={self.classes}, device={self.device}, "
                f"precision={self.precision}, batch_size={self.batch_size})")

    def features(self, clips: Sequence[ClipSource]) -> np.ndarray:
        """float16 (n, T, H, W, C): the backbone features of ``clips``, as `m3net extract` writes them."""
        clips = _clip_list(clips, "features")
        return self._features(clips, _names(clips))

    def fit(self, support: Mapping[str, Sequence[ClipSource]] | str | os.PathLike) -> FewShotClassifier:
        """Extract the support set's features once and keep them: ``{class: [clips]}`` with the same number
        of clips per class, or a ``<class>/<clip>`` folder. Returns the classifier."""
        where = "support"
        if _is_path(support):
            where, support = f"support {os.fspath(support)}", support_folder(support)
        clips = {name: _clip_list(items, f"{where}: class {name!r}") for name, items in _classes(support, where)}
        _check_shots(clips, where)
        sources = [clip for items in clips.values() for clip in items]
        names = [os.fspath(c) if _is_path(c) else f"class {name!r} array #{k}"
                 for name, items in clips.items() for k, c in enumerate(items)]
        return self.fit_features(dict(zip(clips, np.split(self._features(sources, names), len(clips)))))

    def fit_features(self, support: Mapping[str, np.ndarray]) -> FewShotClassifier:
        """The support set as features: ``{class: (K, T, H, W, C)}`` (e.g. rows of ``open_cache(...).features``)."""
        arrays = {name: np.asarray(features) for name, features in _classes(support, "support features")}
        _check_shots(arrays, "support features")
        for name, features in arrays.items():
            self._check_features(features, f"support features of class {name!r}")
        self.classes = list(arrays)
        self._support = self._head_input(np.concatenate(list(arrays.values())))
        labels = np.repeat(np.arange(len(arrays)), [len(f) for f in arrays.values()])
        self._support_labels = torch.as_tensor(labels, device=self.device)
        return self

    def predict(self, queries: Sequence[ClipSource]) -> list[Prediction]:
        """One Prediction per query clip, in order; clips go through the backbone ``batch_size`` at a time."""
        self._require_fit()
        queries = _clip_list(queries, "predict")
        names = _names(queries)
        predictions = []
        for rows, features in self._feature_batches(queries, names):
            predictions += self._score(features, [names[row] for row in rows])
        return predictions

    def predict_features(self, features: np.ndarray, names: Sequence[str] | None = None) -> list[Prediction]:
        """One Prediction per row of query features (Q, T, H, W, C), e.g. from a cache, scored as ``predict``
        scores clips (``batch_size`` at a time); ``names`` become ``Prediction.query`` (default "features #i")."""
        self._require_fit()
        features = np.asarray(features)
        self._check_features(features, "query features")
        names = list(names) if names is not None else [f"features #{i}" for i in range(len(features))]
        if len(names) != len(features):
            raise PredictError(f"predict_features: {len(names)} names for {len(features)} clips")
        predictions = []
        for start in range(0, len(features), self.batch_size):
            end = start + self.batch_size
            predictions += self._score(features[start:end], names[start:end])
        return predictions

    def _head_input(self, features: np.ndarray) -> torch.Tensor:
        """Features (n, T, H, W, C) as the cache stores them -> the head's input on the device. Every feature
        the head sees passes here (support in fit, queries in predict): the one place where a checkpoint's
        own normalisation of its input features applies (``input_norm``, as the FeatureBank applies it)."""
        return torch.as_tensor(self.input_norm.normalise_cached(features), device=self.device)

    def _check_features(self, features: np.ndarray, what: str) -> None:
        if features.ndim != 5 or tuple(features.shape[1:]) != self.feature_shape:
            expected = ", ".join(map(str, self.feature_shape))
            raise PredictError(f"{what}: shape {tuple(features.shape)}, expected (n, {expected}): n clips of T "
                               "frames of H x W maps of width C, as this classifier's backbone and head make and "
                               "read them")

    def _require_fit(self) -> None:
        if self._support is None:
            raise PredictError("predict before fit: call fit({class: [clips]}) with the support set first")

    def _feature_batches(self, clips: list, names: list[str]):
        """(rows, float16 (b, T, H, W, C)) per backbone forward; a clip that cannot be read is an error naming it."""
        check_exist(clips)
        views = ClipViews([(i, name, clip) for i, (name, clip) in enumerate(zip(names, clips))],
                          self.feature_shape[0], 1, seed=0, transform=self.transform)
        with progress_bar(total=len(clips), unit="clip", desc="features", enabled=self.progress) as bar:
            for rows, frames, failures in clip_loader(views, self.batch_size, self.workers, self.device):
                if failures:
                    row, reason = failures[0]
                    raise PredictError(f"cannot read {names[row]}: {reason}")
                yield rows, self.extractor(frames)[:, 0]  # (b, T, H, W, C): the test view
                bar.update(len(rows))

    def _features(self, clips: list, names: list[str]) -> np.ndarray:
        parts = [features for _, features in self._feature_batches(clips, names)]
        return np.concatenate(parts) if parts else np.empty((0, *self.feature_shape), np.float16)

    @torch.no_grad()
    def _score(self, features: np.ndarray, names: list[str]) -> list[Prediction]:
        outputs = self.head(self._support, self._support_labels, self._head_input(features))  # {view: (Q, N)}
        views = {view: torch.softmax(logits, dim=-1) for view, logits in outputs.items() if view != "y"}
        views["y"] = self.head.probabilities(outputs)
        if not all(torch.isfinite(p).all() for p in views.values()):
            raise NonFiniteError(f"head {self.head.name!r}: NaN or inf probabilities for {', '.join(names)}")
        per_view = {view: p.float().cpu().numpy() for view, p in views.items()}  # (Q, N) each
        predictions = []
        for q, name in enumerate(names):
            ranked = sorted(zip(self.classes, per_view["y"][q].tolist()), key=lambda kv: -kv[1])
            predictions.append(Prediction(
                query=name, label=ranked[0][0], probabilities=dict(ranked),
                views={view: dict(zip(self.classes, p[q].tolist())) for view, p in per_view.items()}))
        return predictions


def _names(clips: list) -> list[str]:
    return [os.fspath(c) if _is_path(c) else f"array #{i}" for i, c in enumerate(clips)]


def _cache_precision(recorded: str | None, device: torch.device) -> str:
    """The precision the cache was extracted at where ``device`` runs it (fp16 needs CUDA), else the device's."""
    try:
        return resolve_precision(recorded or "auto", device)
    except ConfigError:
        return resolve_precision("auto", device)


def checkpoint_backbone(path: str, provenance: dict, weights: str | None = None) -> torch.nn.Module:
    """The backbone a checkpoint's cache was extracted with (``weights`` if given), verified by the weights
    digest its provenance records."""
    recorded, digest = provenance["weights"], str(provenance["weights_sha256"])
    if not weights and digest.startswith("random-seed-"):
        return build_backbone("random", seed=int(digest.rsplit("-", 1)[1]))[0]
    if not weights and canonical_weights_name(recorded) not in IMAGENET_FILES and not os.path.isfile(recorded):
        raise WeightsError(f"{path}: its backbone weights {recorded} are missing (the file its cache was extracted "
                           f"with, sha256 {digest}); pass --weights PATH (Python: weights=PATH) to that file")
    name = weights or recorded
    file = resolve_weights_file(name)
    if file is not None and file_sha256(file) != digest:
        raise WeightsError(f"--weights {name}: sha256 differs from the weights the checkpoint's cache was built "
                           f"with ({digest}); pass --weights PATH to that file")
    return build_backbone(name)[0]


class FeatureCache:
    """A feature cache written by `m3net extract`, read-only: its done clips (``video_ids``, ``labels`` into
    ``classes``, ``split``) in file order, and their features on demand."""

    def __init__(self, path: str | os.PathLike):
        cached = load_cache(os.fspath(path), features=False)  # everything but the features, checked
        self.path: str = cached.path
        self.provenance: dict = cached.provenance()  # the extraction's settings (weights, frames, crop, ...)
        self.classes: list[str] = cached.classes
        self.video_ids: list[str] = cached.video_ids
        self.labels: np.ndarray = cached.labels  # (V,) int64 index into classes
        self.split: np.ndarray = cached.split  # (V,) train | val | test
        self.failures: list[tuple[str, str]] = cached.failures  # (video id, reason) of clips extract could not read
        self.feature_shape: tuple = cached.feature_shape  # one clip's: (T, H, W, C), (K, T, H, W, C) with K views
        self._file_rows = cached.rows

    def __repr__(self) -> str:
        return f"FeatureCache({self.path!r}, splits={self.splits}, classes={len(self.classes)})"

    def __len__(self) -> int:
        return len(self.video_ids)

    @property
    def splits(self) -> dict[str, int]:
        """Done clips per split."""
        return {name: int(np.count_nonzero(self.split == name)) for name in SPLITS}

    def rows(self, split: str) -> np.ndarray:
        """Indices (into video_ids, labels, features) of the done clips of ``split``."""
        if split not in SPLITS:
            raise CacheError(f"{self.path}: unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        return np.flatnonzero(self.split == split)

    def features(self, which: str | Sequence[int]) -> np.ndarray:
        """float16 (n, *feature_shape) features of a split's clips or of the clips at these indices, read from
        the file now (NaN/inf refused)."""
        index = self.rows(which) if isinstance(which, str) else np.asarray(which, dtype=np.int64).reshape(-1)
        if len(index) and (index.min() < 0 or index.max() >= len(self)):
            raise CacheError(f"{self.path}: clip index {int(index.min() if index.min() < 0 else index.max())} out "
                             f"of range (the cache has {len(self)} done clips: 0..{len(self) - 1})")
        reader = RowReader(self.path)
        try:
            return reader.read(self._file_rows[index])
        finally:
            reader.close()


def open_cache(path: str | os.PathLike) -> FeatureCache:
    """The feature cache at ``path``, read-only (a cache another process is writing is refused)."""
    return FeatureCache(path)
