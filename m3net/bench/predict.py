"""``m3net bench-predict``: query clips per second through the Python API, with the support set fitted once.

Four numbers from one run of ``m3net.FewShotClassifier`` (what `m3net predict` runs), on the same clips:
    fit        the support set's clips through decode + backbone, once
    features   the query clips through decode + backbone alone (``features``)
    head       the head alone on those features (``predict_features``, after one untimed call)
    predict    the query clips end to end: decode, backbone, head (``predict``): the figure
Each in clips/s. Clips come from --root (<class>/<clip>), else from a generated benchmark's test classes
(seeded); query clips cycle over the clips that are not in the support set. The head is --checkpoint's,
else a fresh --head with random weights on a random-weight backbone (the speed does not depend on the
values). Results go to benchmarks/bench_predict_<head>_<way>w<shot>s_<device>_<date>.{csv,json}.
"""
import dataclasses
import itertools
import json
import os
import tempfile
import time

from m3net.api import FewShotClassifier, create_head, support_folder
from m3net.bench.record import RecordSettings, benchmark_record, write_benchmark
from m3net.config import RunSettings, from_group, setting, settings
from m3net.data.episodes import EpisodeSettings
from m3net.data.synthetic import SyntheticConfig, generate_synthetic
from m3net.errors import ConfigError
from m3net.extract.loop import ExtractConfig
from m3net.model.registry import HeadSettings


@settings
class PredictBenchConfig(HeadSettings, RecordSettings, RunSettings):
    checkpoint: str = setting("", "Trained head and its backbone; default: a fresh --head (random values) on a "
                              "random-weight backbone.", path="file")
    root: str = setting("", "Folder of <class>/<clip> clips; default: a generated benchmark's test classes "
                        "(seeded by --seed).", path="dir")
    way: int = from_group(EpisodeSettings, "way")
    shot: int = from_group(EpisodeSettings, "shot")
    queries: int = setting(16, "Query clips timed (the clips not in the support set, cycled).", minimum=1)
    frames: int = setting(8, "T of a fresh head (a checkpoint brings its own).", minimum=1)
    crop: int = setting(224, "Crop of a fresh head's backbone (a checkpoint brings its own).", minimum=32)
    batch_size: int = from_group(ExtractConfig, "batch_size")
    workers: int = from_group(ExtractConfig, "workers", 0)
    precision: str = from_group(ExtractConfig, "precision")


def _classifier(config):
    options = dict(device=config.device, precision=config.precision, batch_size=config.batch_size,
                   workers=config.workers)
    if config.checkpoint:
        return FewShotClassifier.from_checkpoint(config.checkpoint, **options)
    head = create_head(config.head, num_frames=config.frames, **config.head_options)
    return FewShotClassifier(head, "random", crop=config.crop, **options)


def _clips(config, scratch):
    """(support {class: [clips]}, query clips): the first ``shot`` clips of ``way`` classes, the rest cycled."""
    root = config.root
    if not root:
        root = os.path.join(scratch, "clips")
        generate_synthetic(root, SyntheticConfig(seed=config.seed, train_classes=1, val_classes=1,
                                                 test_classes=config.way, clips_per_class=config.shot + 2),
                           progress=False)
        root = os.path.join(root, "test")
    folder = {name: clips for name, clips in support_folder(root).items() if len(clips) > config.shot}
    if len(folder) < config.way:
        raise ConfigError(f"--root {root}: {len(folder)} classes hold more than --shot {config.shot} clips; "
                          f"--way {config.way} needs that many (the rest are the queries)")
    chosen = dict(itertools.islice(folder.items(), config.way))
    rest = [clip for clips in chosen.values() for clip in clips[config.shot:]]
    support = {name: clips[:config.shot] for name, clips in chosen.items()}
    return support, list(itertools.islice(itertools.cycle(rest), config.queries))


def _timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


def run_bench(config):
    with tempfile.TemporaryDirectory() as scratch:
        support, queries = _clips(config, scratch)  # first: a folder that cannot serve fails fast
        classifier = _classifier(config)
        _, fit_s = _timed(classifier.fit, support)
        features, features_s = _timed(classifier.features, queries)
        classifier.predict_features(features[:1])  # warm-up: the head's first call loads its kernels
        _, head_s = _timed(classifier.predict_features, features)
        _, predict_s = _timed(classifier.predict, queries)
    clips = {"fit": config.way * config.shot, "features": len(queries), "head": len(queries),
             "predict": len(queries)}
    seconds = {"fit": fit_s, "features": features_s, "head": head_s, "predict": predict_s}
    rows = [{"stage": stage, "clips": clips[stage], "seconds": seconds[stage],
             "clips_per_s": clips[stage] / seconds[stage]} for stage in clips]
    recorded = dataclasses.asdict(config)
    if config.checkpoint:  # the checkpoint's head, not the unused --head
        recorded.update(head=classifier.head.name, head_options={})
    return benchmark_record("predict", classifier.device, recorded, rows, precision=classifier.precision,
                            batch_size=classifier.batch_size, feature_shape=list(classifier.feature_shape))


def format_table(result):
    cfg = result["config"]
    frames, side = result["feature_shape"][0], result["feature_shape"][1]
    lines = [f"predict: {cfg['head']} {cfg['way']}-way {cfg['shot']}-shot, {cfg['queries']} queries, T={frames}, "
             f"{side}x{side} maps, {result['batch_size']} clips/forward, {result['precision']} on {result['device']}"
             + (" (CPU numbers)" if result["cpu_numbers"] else "")]
    header = f"{'stage':<9} {'clips':>6} {'seconds':>9} {'clips/s':>9}"
    lines += [header, "-" * len(header)]
    lines += [f"{r['stage']:<9} {r['clips']:>6} {r['seconds']:>9.2f} {r['clips_per_s']:>9.2f}" for r in result["rows"]]
    return "\n".join(lines)


def write_results(result, out_dir):
    """CSV + JSON named after head, its options, way/shot, device and date."""
    cfg = result["config"]
    options = "".join(f"_{k}-{v}" for k, v in sorted(cfg["head_options"].items()))
    columns = {"head": cfg["head"], "head_options": json.dumps(cfg["head_options"]), "precision": result["precision"],
               "batch_size": result["batch_size"]}
    return write_benchmark(result, out_dir, f"predict_{cfg['head']}{options}_{cfg['way']}w{cfg['shot']}s", columns)
