"""A checkpoint meets features of another width, frame count or map size: every route refuses it in one line
(exit status 1) before any feature is read or any backbone built (m3net.train.checkpoint.check_features)."""
import os
import re
import shutil
import types

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from helpers_cache import ORDER_ATTRS, order_only_cache, train_aligned

import m3net
from m3net.cache import ProvenanceError, load_cache, write_cache_arrays, write_channel_statistics
from m3net.cli import main
from m3net.errors import CheckpointError
from m3net.extract.backbone import file_sha256
from m3net.train.checkpoint import check_features, load_checkpoint
from m3net.train.evaluate import EvalConfig, evaluate, write_summary

pytestmark = pytest.mark.usefixtures("aligned_head")

# How each side reads in the refusal: the head of a run on the 64-channel cache, then the features offered.
NARROW = "its head was built for 64-channel features (4 frames, 7x7 maps)"
WIDE = "96-channel features (4 frames, 7x7 maps)"


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    """Two caches of the same kind (order-only classes, 4 frames of 7x7 maps) but for the width, 64 and 96."""
    base = tmp_path_factory.mktemp("widths")
    narrow = str(order_only_cache(base / "narrow.h5", channels=64))
    write_channel_statistics(narrow, progress=False)  # for --input-norm standardize
    return types.SimpleNamespace(base=base, narrow=narrow, wide=str(order_only_cache(base / "wide.h5", channels=96)))


@pytest.fixture(scope="module")
def runs(caches, aligned_head):
    """The test-aligned head trained on the 64-channel cache, with --input-norm standardize (the issue's case)
    and without: {input norm: best.pt}."""
    return {norm: train_aligned(caches.narrow, caches.base / f"run-{norm}", input_norm=norm)["best"]
            for norm in ("standardize", "none")}


@pytest.fixture
def reads(monkeypatch):
    """Every read of cached features (load_cache's and RowReader's go through _finite_rows): a list of row lists."""
    from m3net.cache import reader

    read, original = [], reader._finite_rows
    monkeypatch.setattr(reader, "_finite_rows", lambda dataset, rows, *args, **kwargs: read.append(list(rows))
                        or original(dataset, rows, *args, **kwargs))
    return read


@pytest.fixture
def backbones(monkeypatch):
    """Every ResNet-50 built by the API or finetune (none may be, before the refusal)."""
    from m3net import api
    from m3net.train import finetune

    built = []
    for module in (api, finetune):
        original = module.build_backbone
        monkeypatch.setattr(module, "build_backbone", lambda *args, _original=original, **kwargs:
                            built.append(args) or _original(*args, **kwargs))
    return built


def refused(result, *parts):
    """The command ended with exit status 1 and one line on stderr holding every part."""
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for part in parts:
        assert part in lines[0], (part, lines[0])
    return lines[0]


def listed_root(root, classes=5, clips=6):
    """A folder dataset of clips that are listed but never decoded (the refusals come first):
    root/<split>/<class>/<clip>.mp4."""
    for split in ("train", "val", "test"):
        for c in range(classes):
            folder = root / split / f"{split}-{c}"
            folder.mkdir(parents=True)
            for k in range(clips):
                (folder / f"{split}-{c}-{k}.mp4").write_bytes(b"")
    return str(root)


@pytest.mark.parametrize("norm", ["standardize", "none"])
def test_evaluate_refuses_another_width(caches, runs, reads, norm):
    result = CliRunner().invoke(main, ["evaluate", "--checkpoint", runs[norm], "--cache", caches.wide, "--way", "3",
                                       "--episodes", "2", "--device", "cpu"])
    refused(result, f"--checkpoint {runs[norm]}: {NARROW}", f"--cache {caches.wide}: {WIDE}")
    assert reads == []


def test_train_head_resume_refuses_another_width_and_leaves_the_run_as_it_was(caches, runs, reads, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(os.path.dirname(runs["standardize"]), run)
    files = ("last.pt", "best.pt", "train_log.csv", "val_log.csv")
    before = [(run / name).read_bytes() for name in files]
    result = CliRunner().invoke(main, [
        "train-head", "--resume", "--cache", caches.wide, "--out", str(run), "--head", "test-aligned", "--way", "3",
        "--shot", "1", "--queries", "2", "--episodes", "8", "--lr", "0.05", "--val-every", "4", "--val-episodes", "3",
        "--checkpoint-every", "4", "--log-every", "4", "--device", "cpu", "--input-norm", "standardize"])
    refused(result, f"--resume {run / 'last.pt'}: {NARROW}", f"--cache {caches.wide}: {WIDE}")
    assert reads == []
    assert [(run / name).read_bytes() for name in files] == before


def test_finetune_init_head_refuses_another_width_before_any_backbone_or_run_folder(runs, backbones, tmp_path):
    out = tmp_path / "finetune"
    result = CliRunner().invoke(main, [
        "finetune", "--dataset", "folder", "--root", listed_root(tmp_path / "clips", classes=3, clips=3),
        "--out", str(out), "--head", "test-aligned", "--init-head", runs["standardize"], "--weights", "random",
        "--frames", "4", "--crop", "32", "--way", "2", "--queries", "1", "--episodes", "1", "--workers", "0",
        "--val-episodes", "1", "--device", "cpu"])
    # The map size is not compared here (the head trains on the --crop's maps from now on): the width is the refusal.
    refused(result, f"--init-head {runs['standardize']}: {NARROW}",
            "the ResNet-50 maps at --frames 4 --crop 32: 2048-channel features (4 frames, 1x1 maps)")
    assert backbones == [] and not out.exists()


def test_report_refuses_a_run_of_another_width_before_drawing(caches, runs, reads, tmp_path):
    results = str(tmp_path / "results")
    write_summary(evaluate(EvalConfig(cache=caches.wide, heads=("protonet",), way=3, episodes=2, device="cpu"),
                           progress=False), results)
    reads.clear()  # the evaluation read its episodes; the report must read none
    run = os.path.dirname(runs["none"])
    result = CliRunner().invoke(main, ["report", results, "--run", run])
    refused(result, f"--run {os.path.join(run, 'best.pt')}: {NARROW}",
            f"{caches.wide} (the cache {results} was evaluated on): {WIDE}")
    assert reads == [] and not [name for name in os.listdir(results) if name.endswith(".png")]


def test_predict_refuses_a_head_of_another_width_before_building_the_backbone(runs, backbones, tmp_path):
    query = tmp_path / "query.mp4"
    query.write_bytes(b"")
    (tmp_path / "support").mkdir()
    result = CliRunner().invoke(main, ["predict", "--checkpoint", runs["none"], "--support", str(tmp_path / "support"),
                                       "--query", str(query), "--device", "cpu"])
    refused(result, f"{runs['none']}: {NARROW}",
            "the ResNet-50 maps of its cache's backbone (none, crop 224): 2048-channel features (4 frames, 7x7 maps)")
    assert backbones == []


@pytest.mark.parametrize("norm", ["standardize", "none"])
def test_classifier_from_checkpoint_refuses_a_head_of_another_width(runs, backbones, norm):
    with pytest.raises(CheckpointError, match=r"its head was built for 64-channel features \(4 frames, 7x7 maps\); "
                                              r"the ResNet-50 maps .*: 2048-channel features") as raised:
        m3net.FewShotClassifier.from_checkpoint(runs[norm], device="cpu").fit({})  # never gets to fit
    assert "\n" not in str(raised.value) and backbones == []


def test_reproduce_refuses_a_checkpoint_of_another_width_before_scoring(caches, runs, reads, tmp_path, monkeypatch):
    """reproduce scores its checkpoint through evaluate's check: here its finetune and extract steps are stood in
    for by a 64-channel checkpoint and a 96-channel cache of the test clips made for it (extract always gives
    2048 channels: a width mismatch takes a cache from elsewhere)."""
    from m3net import reproduce

    root, out = listed_root(tmp_path / "clips"), tmp_path / "repro"
    checkpoint = runs["none"]
    cache = out / "folder-m3net-full-1shot" / "cache.h5"
    cache.parent.mkdir(parents=True)
    tests = sorted((c.parent.name, c.stem) for c in (tmp_path / "clips" / "test").rglob("*.mp4"))
    classes = sorted({name for name, _ in tests})
    write_cache_arrays(str(cache), np.zeros((len(tests), 4, 7, 7, 96), np.float16),
                       [classes.index(name) for name, _ in tests], classes, [clip for _, clip in tests],
                       ["test"] * len(tests), {**ORDER_ATTRS, "dataset": "folder",
                                               "weights_sha256": file_sha256(checkpoint)})
    monkeypatch.setattr(reproduce, "_finetuned", lambda tuning, progress: checkpoint)
    monkeypatch.setattr(reproduce, "extract_dataset", lambda config: None)
    result = CliRunner().invoke(main, ["reproduce", "--dataset", "folder", "--root", root, "--out", str(out),
                                       "--eval-episodes", "2", "--workers", "0", "--device", "cpu"])
    refused(result, f"--checkpoint {checkpoint}: {NARROW}", f"--cache {cache}: {WIDE}")
    assert reads == [] and not (cache.parent / "row.json").exists()
    assert not (cache.parent / "results" / "results.json").exists()


def test_another_frame_count_is_refused_like_another_width(caches, runs, reads):
    shorter = order_only_cache(caches.base / "shorter.h5", channels=64, frames=3, classes=(3, 3, 0))
    with pytest.raises(CheckpointError, match=re.escape(f"{NARROW}; --cache {shorter}: 64-channel features (3 frames, "
                                                        "7x7 maps)")):
        evaluate(EvalConfig(checkpoints=(runs["none"],), cache=str(shorter), way=3, episodes=2, device="cpu"),
                 progress=False)
    assert reads == []


def _pooled_copy(source, path, pool):
    """``source`` with every map average-pooled to pool x pool (as --pool-on-load pools it), same attributes."""
    cached = load_cache(source, pool=pool)
    write_cache_arrays(str(path), cached.features, cached.labels, cached.classes, cached.video_ids, cached.split,
                       {k: cached.attrs[k] for k in (*ORDER_ATTRS, "num_frames")})
    return str(path)


@pytest.fixture(scope="module")
def m3net_run(caches):
    """An m3net head (IFCE pools its 7x7 maps to 2x2 first) trained on the 64-channel cache, and that cache's maps
    pooled to 2x2 and to 1x1."""
    run = train_aligned(caches.narrow, caches.base / "m3net", head="m3net", episodes=2, val_every=2,
                        checkpoint_every=2, head_options={"proj_dim": 8, "patch_grid": 2, "use_im": False})
    return types.SimpleNamespace(best=run["best"], pooled2=_pooled_copy(caches.narrow, caches.base / "p2.h5", 2),
                                 pooled1=_pooled_copy(caches.narrow, caches.base / "p1.h5", 1))


def _scores(checkpoint, cache, **options):
    summary = evaluate(EvalConfig(checkpoints=(checkpoint,), cache=cache, way=3, episodes=3, device="cpu", **options),
                       progress=False)
    return summary["results"]


def test_maps_pooled_to_the_heads_first_pooling_fit_and_others_are_refused(caches, m3net_run):
    # 2x2 maps are what the head makes of the 7x7 ones first: the same scores as pooling the full cache on load.
    assert _scores(m3net_run.best, m3net_run.pooled2) == _scores(m3net_run.best, caches.narrow, pool_on_load=True)
    with pytest.raises(CheckpointError, match=r"64-channel features \(4 frames, 7x7 maps, pooled to 2x2 first\); "
                                              r"--cache .*p1\.h5: 64-channel features \(4 frames, 1x1 maps\)"):
        _scores(m3net_run.best, m3net_run.pooled1)


def test_a_checkpoint_written_before_the_features_entry(caches, m3net_run, tmp_path):
    """Its width and frames come from head_config, so another width is still refused; its map size is recorded
    nowhere, so pooled maps are not refused (no false refusal)."""
    state = torch.load(m3net_run.best, weights_only=True)
    del state["features"]
    old = str(tmp_path / "old.pt")
    torch.save(state, old)
    assert _scores(old, m3net_run.pooled1)  # scored: nothing says what maps it was trained on
    with pytest.raises(CheckpointError, match=r"its head was built for 64-channel features \(4 frames\); "
                                              r"--cache .*wide\.h5: 96-channel features \(4 frames, 7x7 maps\)"):
        _scores(old, caches.wide)


def _views_cache(source, path, channels, views=2):
    """``source``'s clips at ``channels`` channels (its channels repeated) with ``views`` views each: its maps, then
    the maps plus noise."""
    cached = load_cache(source)
    maps = np.tile(cached.features, 2)[..., :channels]  # (V, T, 7, 7, C)
    noise = np.random.default_rng(0).standard_normal((views - 1, *maps.shape)).astype(np.float16)
    features = np.stack([maps, *(maps + noise)], axis=1)  # (V, K, T, 7, 7, C)
    write_cache_arrays(str(path), features, cached.labels, cached.classes, cached.video_ids, cached.split,
                       {**{k: cached.attrs[k] for k in (*ORDER_ATTRS, "num_frames")}, "views": views})
    return str(path)


def test_views_are_read_past_and_their_count_is_provenance(caches, tmp_path):
    narrow = _views_cache(caches.narrow, tmp_path / "narrow-views.h5", 64)
    wide = _views_cache(caches.narrow, tmp_path / "wide-views.h5", 96)
    best = train_aligned(narrow, tmp_path / "run", episodes=4, val_every=4, checkpoint_every=4)["best"]
    assert load_checkpoint(best)["features"] == {"channels": 64, "frames": 4, "map": [7, 7], "pool": None}
    assert _scores(best, narrow)
    # The views axis is not taken for frames: 4 frames on both sides, the width differs.
    with pytest.raises(CheckpointError, match=re.escape(f"{NARROW}; --cache {wide}: {WIDE}")):
        _scores(best, wide)
    with pytest.raises(ProvenanceError, match=re.escape(f"--cache {caches.narrow}: not the kind of cache --checkpoint "
                                                        f"{best} was trained on: views: 0 vs 2")):
        _scores(best, caches.narrow)


STATE = {"provenance": {"crop": 224}, "head_config": {"feature_dim": 8, "num_frames": 4}}


@pytest.mark.parametrize("trained, pool, given, maps, fits", [
    ([7, 7], None, (7, 7), True, True),
    ([7, 7], None, (4, 4), True, False),  # a head that does not pool first needs the very maps
    ([7, 7], 4, (4, 4), True, True),  # pooled to what the head pools to first
    ([4, 4], 4, (7, 7), True, True),  # trained on pooled maps, offered the full ones it pools the same way
    ([7, 7], 4, (1, 1), True, False),  # pooled further than the head pools
    ([7, 7], 1, (5, 5), True, False),  # another map size is no pooling of these
    ([7, 7], 4, (1, 1), False, True),  # finetune --init-head: the map is not compared
    (None, None, (1, 1), True, True),  # a checkpoint that records no map
])
def test_map_rules(trained, pool, given, maps, fits):
    state = {**STATE, "features": {"channels": 8, "frames": 4, "map": trained, "pool": pool}}
    check = lambda: check_features(state, "ckpt.pt", (4, *given, 8), "--cache c.h5", maps=maps)  # noqa: E731
    if fits:
        check()
    else:
        with pytest.raises(CheckpointError, match=rf"ckpt.pt: .*; --cache c.h5: 8-channel features \(4 frames, "
                                                  rf"{given[0]}x{given[1]} maps\)"):
            check()


def test_provenance_is_compared_after_the_shape():
    state = {**STATE, "features": {"channels": 8, "frames": 4, "map": [7, 7], "pool": None}}
    check_features(state, "ckpt.pt", (4, 7, 7, 8), "--cache c.h5", {"crop": 224, "created": "today"})
    with pytest.raises(ProvenanceError, match="--cache c.h5: not the kind of cache ckpt.pt was trained on: crop: 160 "
                                              "vs 224"):
        check_features(state, "ckpt.pt", (4, 7, 7, 8), "--cache c.h5", {"crop": 160})
    with pytest.raises(CheckpointError, match="16-channel"):  # the shape first, whatever the provenance
        check_features(state, "ckpt.pt", (4, 7, 7, 16), "--cache c.h5", {"crop": 160})
