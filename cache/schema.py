"""The HDF5 feature cache: layout, provenance keys and the checks both sides use.

    /features  (V, T, 7, 7, C) float16   one video per chunk, rows in video order
               (V, K, T, 7, 7, C) with K > 0 augmented views (attrs["views"] = K)
    /labels    (V,) int64                index into /classes
    /classes   (K,) str                  class names as in the split files
    /video_ids (V,) str                  clip ids as in the split files
    /split     (V,) str                  train | val | test
    /done      (V,) bool                 set only after the row's features are flushed
    /failures  (F,) (video_id, error)    clips that could not be read, with the reason
    attrs: schema_version, dataset, backbone, weights, weights_sha256, num_frames, sampling,
           resize, crop, mean, std, dtype, views, code_version, created
"""
from m3net.data.episodes import SPLITS  # noqa: F401 (re-exported: /split holds these)
from m3net.errors import CacheError, ProvenanceError  # noqa: F401 (re-exported)

SCHEMA_VERSION = 1
# Attributes that decide what the features are: a cache built with any other value is a
# different cache (resume refuses it; readers with expectations refuse it).
PROVENANCE_KEYS = (
    "dataset", "backbone", "weights", "weights_sha256", "num_frames", "sampling",
    "resize", "crop", "mean", "std", "dtype", "views",
)
REQUIRED_ATTRS = PROVENANCE_KEYS + ("code_version",)


def normalise_attr(value):
    """HDF5 hands attributes back as numpy scalars / arrays / bytes: compare plain Python values."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, (list, tuple)):
        return [normalise_attr(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return value
    return value


def _same(a, b):
    a, b = normalise_attr(a), normalise_attr(b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))
    return a == b


def provenance_differences(attrs, expected):
    """[(key, cache value, expected value)] for every expected key the cache disagrees with."""
    return [
        (key, normalise_attr(attrs.get(key)), normalise_attr(value))
        for key, value in expected.items()
        if not _same(attrs.get(key), value)
    ]


def check_provenance(attrs, expected, path="<cache>"):
    """Raise ProvenanceError naming every key where ``attrs`` differs from ``expected``."""
    diffs = provenance_differences(attrs, expected)
    if diffs:
        listed = "; ".join(f"{key}: cache has {have!r}, expected {want!r}" for key, have, want in diffs)
        raise ProvenanceError(f"{path}: built with different settings ({listed}). "
                              "Use a new --out file, or re-extract with matching settings.")
