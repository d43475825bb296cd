"""The generated benchmark: determinism, layout, decodability, the order property, reuse."""
import argparse
import json
import os
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
from click.testing import CliRunner

from m3net.cli import main as cli_main
from m3net.data.synthetic import (
    SPLITS,
    SUBACTIONS,
    VARIANTS,
    SyntheticConfig,
    build_manifest,
    clip_params,
    generate_synthetic,
    load_manifest,
    phase_at,
    random_clip_params,
    render_background,
    render_clip,
    render_frame,
)
from m3net.errors import ConfigError
from m3net.extract.sampling import sample_indices

# One family per split at most: test = 3 orders + 1 detail sibling.
SMALL = SyntheticConfig(
    seed=7, train_classes=3, val_classes=2, test_classes=4, clips_per_class=2,
    frames=12, size=64, fps=8, phases=3, family_size=4,
)


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    pytest.importorskip("av")  # the decoders are imported where used: the rest runs without them
    out = str(tmp_path_factory.mktemp("syn") / "bench")
    manifest, status = generate_synthetic(out, SMALL, progress=False)
    assert status == "generated"
    return out, manifest


def decode_pyav(path):
    av = pytest.importorskip("av")
    with av.open(path) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def decode_decord(path):
    decord = pytest.importorskip("decord")  # installed on x86_64 only
    reader = decord.VideoReader(path)
    return reader.get_batch(list(range(len(reader)))).asnumpy()


def blocks(clip, k=8):
    t, h, w, c = clip.shape
    return clip.astype(float).reshape(t, h // k, k, w // k, k, c).mean(axis=(2, 4))


def other_sequence(manifest, name):
    return next(c["sequence"] for c in manifest["classes"] if c["name"] != name)


def all_frames(out, manifest):
    return {c["id"]: decode_pyav(os.path.join(out, c["path"])) for c in manifest["clips"]}


def test_layout_and_disjoint_classes(bench):
    out, manifest = bench
    expected = {c["path"] for c in manifest["clips"]}
    found = {
        os.path.relpath(os.path.join(root, name), out)
        for root, _, names in os.walk(out) for name in names if name != "manifest.json"
    }
    assert found == expected  # no stray or partial files
    counts = {s: getattr(SMALL, f"{s}_classes") for s in SPLITS}
    assert {s: len(manifest["splits"][s]) for s in SPLITS} == counts
    assert len(expected) == sum(counts.values()) * SMALL.clips_per_class
    for path in expected:
        split, cls, clip = path.split("/")
        assert split in SPLITS and cls in manifest["splits"][split] and clip.endswith(".mp4")
    names = [set(manifest["splits"][s]) for s in SPLITS]
    assert all(not (a & b) for i, a in enumerate(names) for b in names[i + 1:])
    assert len({c["id"] for c in manifest["clips"]}) == len(manifest["clips"])
    assert manifest["complete"] and manifest["seed"] == SMALL.seed and manifest["m3net_version"]


def test_both_decoders_read_every_clip(bench):
    out, manifest = bench
    sequences = {c["name"]: c["sequence"] for c in manifest["classes"]}
    for entry in manifest["clips"]:
        path = os.path.join(out, entry["path"])
        a, b = decode_decord(path), decode_pyav(path)
        assert a.shape == b.shape == (SMALL.frames, SMALL.size, SMALL.size, 3)
        assert np.array_equal(a, b)
        # The decoded frames are the ones rendered from the manifest's parameters, up to the
        # codec (yuv420 halves chroma at edges, pixel noise is not kept exactly): compare 8x8
        # block means, and against a clip of another class.
        rendered = render_clip(sequences[entry["class"]], entry["params"], SMALL.frames, SMALL.size)
        assert np.abs(blocks(a) - blocks(rendered)).mean() < 2
        rendered_other = render_clip(other_sequence(manifest, entry["class"]), entry["params"],
                                     SMALL.frames, SMALL.size)
        assert np.abs(blocks(a) - blocks(rendered_other)).mean() > 3


def test_same_seed_same_frames_other_seed_differs(bench, tmp_path):
    out, manifest = bench
    again, _ = generate_synthetic(str(tmp_path / "again"), SMALL, progress=False)
    assert again == manifest
    first = all_frames(out, manifest)
    second = all_frames(str(tmp_path / "again"), again)
    assert all(np.array_equal(first[k], second[k]) for k in first)

    other, _ = generate_synthetic(str(tmp_path / "other"), SyntheticConfig(**{**vars(SMALL), "seed": 8}),
                                  progress=False)
    other_frames = all_frames(str(tmp_path / "other"), other)
    assert other["classes"] != manifest["classes"] or other["clips"] != manifest["clips"]
    assert not any(np.array_equal(first[k], other_frames[k]) for k in first)


def test_order_only_pairs_in_test_split():
    manifest = build_manifest(SMALL)
    test = [c for c in manifest["classes"] if c["split"] == "test"]
    pairs = [
        (a["name"], b["name"])
        for i, a in enumerate(test) for b in test[i + 1:]
        if Counter(map(tuple, a["sequence"])) == Counter(map(tuple, b["sequence"])) and a["sequence"] != b["sequence"]
    ]
    assert len(pairs) >= 2
    assert sorted(map(tuple, manifest["order_only_pairs"]["test"])) == sorted(pairs)
    # Order classes of one family differ at every phase position (nothing to align on).
    orders = [c["sequence"] for c in test if c["relation"] == "order"]
    for i, a in enumerate(orders):
        for b in orders[i + 1:]:
            assert all(x != y for x, y in zip(a, b))
    # The detail sibling differs from one order class in exactly one phase's variant.
    detail = next(c["sequence"] for c in test if c["relation"] == "detail")
    diffs = [[(x, y) for x, y in zip(detail, o) if x != y] for o in orders]
    assert any(len(d) == 1 and d[0][0][0] == d[0][1][0] for d in diffs)


def test_subaction_types_differ_in_global_colour():
    """Cheap stand-in for the backbone check (tools/validate_synthetic.py): the mean colour of
    a frame's saturated pixels names the sub-action type under nuisance (nearest centroid)."""
    rng = np.random.default_rng(0)
    stats, labels = [], []
    for t, kind in enumerate(SUBACTIONS):
        for variant in VARIANTS:
            for _ in range(6):
                params = random_clip_params(rng, 4)
                frame = render_frame(render_background(params, 48), [kind.name, variant], rng.uniform(), params,
                                     np.random.default_rng(params["noise_seed"])).astype(float)
                saturated = frame.max(2) - frame.min(2) > 80  # backgrounds are muted
                stats.append(frame[saturated].mean(0))
                labels.append(t)
    stats, labels = np.array(stats), np.array(labels)
    fit = np.arange(len(labels)) % 2 == 0
    centroids = np.stack([stats[fit & (labels == t)].mean(0) for t in range(len(SUBACTIONS))])
    predicted = np.argmin(((stats[~fit, None] - centroids) ** 2).sum(-1), axis=1)
    assert np.mean(predicted == labels[~fit]) >= 0.9

    # The detail (variant b: light texture) brightens the same sub-action in the same pose.
    params = random_clip_params(np.random.default_rng(1), 4)
    background = render_background(params, 48)
    for kind in SUBACTIONS:
        a, b = (render_frame(background, [kind.name, v], 0.3, params, np.random.default_rng(0)).mean()
                for v in VARIANTS)
        assert b > a + 5


def test_reuse_resume_and_refusals(bench, tmp_path):
    out, manifest = bench
    mtimes = {c["path"]: os.stat(os.path.join(out, c["path"])).st_mtime_ns for c in manifest["clips"]}
    again, status = generate_synthetic(out, SMALL, progress=False)
    assert status == "reused" and again == manifest
    assert all(os.stat(os.path.join(out, p)).st_mtime_ns == m for p, m in mtimes.items())

    with pytest.raises(ConfigError, match="frames: 12 there, 10 asked"):
        generate_synthetic(out, SyntheticConfig(**{**vars(SMALL), "frames": 10}), progress=False)

    # An interrupted run (manifest not complete, a clip missing) is finished, identically.
    copy = tmp_path / "copy"
    generate_synthetic(str(copy), SMALL, progress=False)
    victim = os.path.join(copy, manifest["clips"][3]["path"])
    reference = decode_pyav(victim)
    os.remove(victim)
    partial = dict(load_manifest(str(copy)), complete=False)
    with open(copy / "manifest.json", "w") as fh:
        json.dump(partial, fh)
    _, status = generate_synthetic(str(copy), SMALL, progress=False)
    assert status == "resumed" and np.array_equal(decode_pyav(victim), reference)
    assert load_manifest(str(copy))["complete"]

    _, status = generate_synthetic(str(copy), SyntheticConfig(**{**vars(SMALL), "clips_per_class": 1}),
                                   overwrite=True, progress=False)
    assert status == "generated" and not os.path.exists(victim.replace("_001.mp4", "_002.mp4"))
    assert len(load_manifest(str(copy))["clips"]) == sum(getattr(SMALL, f"{s}_classes") for s in SPLITS)

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "holiday.mp4").write_bytes(b"x")
    with pytest.raises(ConfigError, match="no manifest.json"):
        generate_synthetic(str(foreign), SMALL, progress=False)
    assert (foreign / "holiday.mp4").exists()


@pytest.mark.parametrize("overrides, expected", [
    ({"phases": 9}, "--phases 9"), ({"size": 48}, "--size 48"), ({"family_size": 6}, "--family-size 6"),
    ({"test_classes": 0}, "--test-classes 0"), ({"tempo": 2.5}, "--tempo 2.5: expected a number in 0..2"),
    ({"tempo": -0.1}, "--tempo -0.1"), ({"tempo": "fast"}, "--tempo fast"),
    ({"phases": 2, "family_size": 2, "train_classes": 200}, "--family-size 2: .* 103 families needed, 60 sets"),
])
def test_bad_config_names_the_option(tmp_path, overrides, expected):
    with pytest.raises(ConfigError, match=expected):
        generate_synthetic(str(tmp_path / "out"), SyntheticConfig(**{**vars(SMALL), **overrides}), progress=False)
    assert not (tmp_path / "out").exists()


def test_cli_make_synthetic(tmp_path):
    pytest.importorskip("av")
    out = str(tmp_path / "cli")
    args = ["make-synthetic", "--out", out, "--seed", "3", "--train-classes", "2", "--val-classes", "1",
            "--test-classes", "2", "--clips-per-class", "1", "--frames", "6", "--size", "32", "--phases", "2",
            "--family-size", "2", "--codec", "mpeg4"]
    result = CliRunner().invoke(cli_main, args)
    assert result.exit_code == 0, result.output
    manifest = load_manifest(out)
    assert manifest["config"]["codec"] == "mpeg4" and manifest["seed"] == 3 and len(manifest["clips"]) == 5
    assert decode_decord(os.path.join(out, manifest["clips"][0]["path"])).shape == (6, 32, 32, 3)
    assert "reused" in CliRunner().invoke(cli_main, args).output
    refused = CliRunner().invoke(cli_main, args[:-2] + ["--codec", "libx264"])
    assert refused.exit_code != 0 and "codec: 'mpeg4' there, 'libx264' asked" in refused.output


# Tempo: phase durations vary per clip within a class (SyntheticConfig.tempo).

def sampled_phases(config, params, t=8):
    """Phase index (-1 in the lead-in / lead-out) at the t frames the cache samples at test time."""
    return [-1 if (where := phase_at(k, config.frames, params)) is None else where[0]
            for k in sample_indices(config.frames, t)]


def phase_agreement(config, classes=6):
    """Share of (two clips of one class, sampled frame) showing the same phase: what a fixed
    frame-by-frame (diagonal) match can rely on."""
    agree = []
    for c in range(classes):
        phases = np.array([sampled_phases(config, clip_params(config, c, k)) for k in range(config.clips_per_class)])
        agree += [np.mean(a == b) for i, a in enumerate(phases) for b in phases[i + 1:]]
    return float(np.mean(agree))


def test_tempo_varies_phase_durations_within_a_class():
    config = SyntheticConfig()
    assert config.tempo > 0  # the default benchmark has tempo variation
    durations = np.array([clip_params(config, 0, k)["durations"] for k in range(config.clips_per_class)])
    assert durations.shape == (config.clips_per_class, config.phases)
    assert np.allclose(durations.sum(1), 1) and (durations > 0).all()
    assert len({tuple(d) for d in durations}) == config.clips_per_class
    # The ends of the phases spread by a sampled frame or more (24 frames / 8 samples = 3 frames) ...
    ends = np.cumsum(durations, axis=1)[:, :-1]
    assert (ends.std(0) > 0.1).any()
    # ... so frame t of two clips of one class shows another phase far more often than at tempo 0,
    flat = replace(config, tempo=0.0)
    assert phase_agreement(config) < phase_agreement(flat) - 0.1
    # while every phase still shows in the sampled frames of most clips (DTW can align them; 0.78 at 0.8).
    shown = [set(sampled_phases(config, clip_params(config, c, k))) >= set(range(config.phases))
             for c in range(10) for k in range(config.clips_per_class)]
    assert np.mean(shown) >= 0.7


def test_tempo_is_deterministic_per_seed_and_moves_only_the_durations():
    config = replace(SMALL, tempo=0.6)
    assert build_manifest(config) == build_manifest(config)
    other = build_manifest(replace(config, seed=SMALL.seed + 1))
    assert [c["params"]["durations"] for c in other["clips"]] != \
        [c["params"]["durations"] for c in build_manifest(config)["clips"]]
    for k in range(3):
        a, b = clip_params(config, 0, k), clip_params(replace(config, tempo=0.2), 0, k)
        assert a["durations"] != b["durations"]
        assert {n: v for n, v in a.items() if n != "durations"} == {n: v for n, v in b.items() if n != "durations"}


def test_tempo_zero_gives_the_phases_of_before():
    """At tempo 0 the phase shares are those of generator version 1: the third draw of the clip's
    generator (U(0.75, 1.25) per phase, after the background's grey levels and tints), normalised."""
    config = replace(SMALL, tempo=0.0)
    for c, k in [(0, 0), (1, 1), (4, 0)]:
        rng = np.random.default_rng(np.random.SeedSequence([config.seed, 1, c, k]))
        rng.uniform(60, 190, size=2)
        rng.uniform(-30, 30, size=3), rng.uniform(-30, 30, size=3)
        before = rng.uniform(0.75, 1.25, size=config.phases)
        assert clip_params(config, c, k)["durations"] == (before / before.sum()).tolist()


def test_validator_help_prints(capsys):
    """`python tools/validate_synthetic.py --help` lists its options (a % in a help text
    made argparse raise instead)."""
    import validate_synthetic

    with pytest.raises(SystemExit) as stop:
        validate_synthetic.main(["--help"])
    assert stop.value.code == 0
    assert "--tempo" in capsys.readouterr().out


def _validated(diagonal, dtw, types=0.95):
    """One seed's validator results (validate_synthetic.validate_benchmark's layout)."""
    episodes = {"prototype": 0.25, "diagonal": diagonal, "dtw": dtw}
    return {"config": {"seed": 0, "tempo": 0.8}, "generator_version": 2,
            "subactions": {"type_1nn": types, "type_chance": 1 / 6, "variant_1nn": 0.9},
            "5way_1shot": episodes, "5way_5shot": episodes, "order_only_pairs_2way_1shot": episodes}


def test_validator_judges_the_targets_on_the_mean_over_the_benchmark_seeds(tmp_path):
    """Several --seeds: every accuracy is the mean over the seeds' benchmarks, the targets are judged on those
    means, and the README section shows each seed's value beside the mean."""
    from docs_results import render_synthetic_validation
    from validate_synthetic import check_targets, over_seeds, seeds_option

    per_seed = {"0": _validated(0.40, 0.49), "1": _validated(0.30, 0.45)}  # gaps of 9 and 15 points
    mean = over_seeds(per_seed)
    assert mean["5way_1shot"]["diagonal"] == pytest.approx(0.35) and mean["5way_1shot"]["dtw"] == pytest.approx(0.47)
    gap_target = "diagonal at least 0.10 below hard DTW (5-way 1-shot)"
    assert check_targets(mean)[gap_target] is True
    assert check_targets(per_seed["0"])[gap_target] is False
    record = {"config": {"tempo": 0.8}, "seeds": [0, 1], "split": "test", "episodes": 2000, "code_version": "abc1234",
              "generator_version": 2, **mean, "per_seed": per_seed, "targets": check_targets(mean),
              "targets_per_seed": {seed: check_targets(r) for seed, r in per_seed.items()}}
    os.makedirs(tmp_path / "benchmarks")
    (tmp_path / "benchmarks" / "synthetic_validation_2026-01-01.json").write_text(json.dumps(record))
    text = render_synthetic_validation(str(tmp_path))
    assert "--seeds 0,1 " in text
    assert "| 5-way 1-shot | 0.25 (0.25, 0.25) | 0.35 (0.40, 0.30) | 0.47 (0.49, 0.45) |" in text
    assert f"{gap_target}: met (on the mean; in 1 of 2 seeds alone)" in text
    assert "per seed: 9.0, 15.0 points" in text
    assert seeds_option("0,1,2") == [0, 1, 2]
    with pytest.raises(argparse.ArgumentTypeError, match="listed twice"):
        seeds_option("1,1")
