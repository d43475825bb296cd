"""``m3net predict``: classify query clips against a folder of labelled support clips.

Support and query clips go through the very backbone, sampling and transform the checkpoint's
cache was built with (read from the provenance it stores), then through the trained head.
"""
import os

import numpy as np
import torch

from m3net.config import RunSettings, setting, settings
from m3net.data.datasets import load_dataset
from m3net.errors import PredictError  # noqa: F401 (re-exported)
from m3net.extract.backbone import build_backbone, file_sha256, resolve_weights_file
from m3net.extract.loop import ClipViews, Extractor, resolve_precision
from m3net.extract.transforms import TransformConfig
from m3net.runtime import resolve_device
from m3net.train.evaluate import load_trained_head
from m3net.train.features import InputNormSettings, checkpoint_features, input_norm_for


@settings
class PredictConfig(InputNormSettings, RunSettings):
    checkpoint: str = setting(help="Trained head (best.pt of `m3net train-head` or `m3net finetune`).", path="file")
    support: str = setting(help="Folder of <class>/<clip>: the same number (1-5) of labelled clips per class.",
                           path="dir")
    queries: tuple = setting((), cli=False)  # --query, repeatable: video files or frame folders
    weights: str = setting("", "Backbone weights if not where the checkpoint's cache found them (checked by "
                           "sha256); default: what the checkpoint's cache was built with.")

    def __post_init__(self):
        self.queries = tuple(self.queries)
        super().__post_init__()


def backbone_for(provenance, override=""):
    """The backbone the cache was extracted with, verified by its recorded weights digest."""
    weights, digest = provenance["weights"], provenance["weights_sha256"]
    if override:
        weights = override
    elif str(digest).startswith("random-seed-"):
        return build_backbone("random", seed=int(str(digest).rsplit("-", 1)[1]))
    path = resolve_weights_file(weights)
    if path is not None and file_sha256(path) != digest:
        raise PredictError(f"--weights {weights}: sha256 differs from the weights the checkpoint's cache was built "
                           f"with ({digest}); pass --weights PATH to that file")
    return build_backbone(weights)


def _features(extractor, clips, frames, transform):
    """[(clip id, path)] -> float16 (n, T, 7, 7, C); a clip that cannot be read is an error."""
    views = ClipViews([(i, cid, path) for i, (cid, path) in enumerate(clips)], frames, 1, seed=0, transform=transform)
    out = []
    for i in range(len(views)):
        _, clip_views, reason = views[i]
        if reason is not None:
            raise PredictError(f"cannot read {clips[i][1]}: {reason}")
        out.append(extractor(clip_views[None])[0, 0])  # (T, 7, 7, C)
    return np.stack(out)


def predict(config):
    """[{query, predicted, probabilities {class: p}}] for every query clip."""
    missing = [q for q in config.queries if not os.path.exists(q)]
    if missing:
        raise PredictError(f"--query: no such file(s): {', '.join(missing)}")
    if not os.path.isdir(config.support):
        raise PredictError(f"--support {config.support}: no such folder (expected <class>/<clip> inside)")
    device = resolve_device(config.device)
    head, state = load_trained_head(config.checkpoint, device)
    input_norm_for(config.input_norm, [(config.checkpoint, state)])  # a mismatch is refused before any decoding
    provenance = state["provenance"]
    support_set = load_dataset("folder", config.support)
    found = [c for c in support_set.clips if c.path]
    classes = support_set.classes
    counts = {name: sum(1 for c in found if classes[c.label] == name) for name in classes}
    if len(classes) < 2 or len(set(counts.values())) != 1 or min(counts.values()) < 1:
        raise PredictError(f"--support {config.support}: expected <class>/<clip> with the same number of clips "
                           f"(1-5) in each of at least 2 classes; found {counts}")
    model, _ = backbone_for(provenance, config.weights)
    extractor = Extractor(model, device, resolve_precision("auto", device), batch_size=1)
    transform = TransformConfig(resize=tuple(provenance["resize"]), crop=int(provenance["crop"]),
                                mean=tuple(provenance["mean"]), std=tuple(provenance["std"]))
    frames = int(provenance["num_frames"])
    # the maps as the head saw them in training: the checkpoint's --input-norm with its statistics
    support = checkpoint_features(_features(extractor, [(c.clip_id, c.path) for c in found], frames, transform),
                                  state, config.input_norm, config.checkpoint)
    query = checkpoint_features(_features(extractor, [(os.path.basename(q), q) for q in config.queries], frames,
                                          transform), state, config.input_norm, config.checkpoint)
    support_labels = torch.as_tensor([c.label for c in found], device=device)
    with torch.no_grad():
        outputs = head(torch.as_tensor(support, device=device), support_labels, torch.as_tensor(query, device=device))
    probs = head.probabilities(outputs)  # (Q, N)
    results = []
    for path, row in zip(config.queries, probs.cpu().numpy()):
        ranked = sorted(zip(classes, row.tolist()), key=lambda kv: -kv[1])
        results.append({"query": path, "predicted": ranked[0][0], "probabilities": dict(ranked)})
    return results
