"""The paper's route on a partial Gym99 (the real split lists, a few tiny clips of a few classes per split, the rest
missing): dataset-info, reproduce --plan, reproduce, with the coverage in row.json; and the bad inputs that must be
refused before any work, leaving nothing behind."""
import csv
import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

from m3net import report
from m3net.cache import cache_info
from m3net.cli import main
from m3net.data.datasets import load_split_lists
from m3net.data.synthetic import write_mp4
from m3net.footprint import cache_bytes, clip_counts, extract_frames, finetune_frames
from m3net.report import draw_report
from m3net.reproduce import ReproduceConfig, finetune_config

CLASSES, CLIPS = 6, 8  # per split: the first CLASSES classes of its list, CLIPS clips each


def gym99_root(root, classes=CLASSES, clips=CLIPS, files=None):
    """A Gym99-shaped root: the first ``clips`` listed clips of the first ``classes`` classes of each split (``files``:
    {split: (classes, clips)} overrides per split), as tiny mp4s (12 frames of 32x32, a colour per class)."""
    rng = np.random.default_rng(0)
    for split, entries in load_split_lists("gym99").items():
        n_classes, n_clips = (files or {}).get(split, (classes, clips))
        for k, label in enumerate(list(dict.fromkeys(label for label, _ in entries))[:n_classes]):
            colour = rng.integers(0, 256, size=3)
            for clip_id in [c for lab, c in entries if lab == label][:n_clips]:
                frames = np.clip(colour + rng.integers(-20, 21, size=(12, 32, 32, 3)), 0, 255).astype(np.uint8)
                os.makedirs(root / label, exist_ok=True)
                write_mp4(str(root / label / f"{clip_id}.mp4"), frames, 12, "mpeg4")
    return str(root)


TINY = ["--weights", "random", "--frames", "2", "--crop", "32", "--finetune-episodes", "4", "--eval-episodes", "3",
        "--val-episodes", "1", "--workers", "0", "--device", "cpu"]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:--weights random")
def test_a_partial_gym99_goes_through_dataset_info_plan_and_reproduce(tmp_path, monkeypatch):
    root = gym99_root(tmp_path / "gym99")
    info = CliRunner().invoke(main, ["dataset-info", "--dataset", "gym99", "--root", root, "--json"])
    assert info.exit_code == 0, info.output
    splits = json.loads(info.output)["splits"]
    listed = {"train": (17171, 61), "val": (4410, 12), "test": (13260, 26)}
    for split, (clips, classes) in listed.items():
        entry = splits[split]
        assert (entry["found"], entry["clips"], entry["classes_found"], entry["classes"]) == (48, clips, 6, classes)
        assert entry["episode_classes"] == 6 and entry["forms_episodes"]

    out = tmp_path / "reproduce"
    args = ["reproduce", "--dataset", "gym99", "--root", root, "--out", str(out), *TINY]
    plan = CliRunner().invoke(main, [*args, "--plan"])
    assert plan.exit_code == 0, plan.output
    text = plan.output
    assert "train 48/17,171 clips, 6/61 classes" in text and "test 48/13,260 clips, 6/26 classes" in text
    # 4 episodes x 5-way x (1 + 5) clips x 2 frames; one validation of 1 episode x 5 x (1 + 1) x 2
    assert "= 240 frames; validation 1 x 1 episodes x 5 x (1 + 1) x 2 = 20 frames" in text
    assert "extract 48 test clips x 2 frames = 96 frames (--splits test)" in text
    assert "checkpoints last.pt + best.pt" in text and "frame folders of the 144 present clips" in text
    assert "the cell ~" in text and "timed     on cpu: 4 present clips decoded" in text and "partial" in text
    assert not out.exists()  # the plan wrote nothing

    done = CliRunner().invoke(main, args)
    assert done.exit_code == 0, done.output
    assert "on partial data, so not the paper's setting: train 48 of 17,171 clips (6 of 61 classes)" in done.output
    cell = out / "gym99-m3net-full-1shot"
    row = json.loads((cell / "row.json").read_text())
    assert row["paper_accuracy"] == 72.70 and row["complete"] is False
    for split, (clips, classes) in listed.items():
        assert (row[f"{split}_clips"], row[f"{split}_listed_clips"]) == (48, clips)
        assert (row[f"{split}_classes"], row[f"{split}_listed_classes"]) == (6, classes)
    assert (row["finetune_episodes"], row["finetune_optimizer_steps"]) == (4, 4)
    info = cache_info(str(cell / "cache.h5"))  # only the test split was extracted
    assert info["splits"]["test"]["done"] == 48 and info["done"] == 48 and info["failures"] == []
    with open(out / "table.csv") as fh:
        table = list(csv.DictReader(fh))
    assert table[0]["test_clips"] == "48" and table[0]["test_listed_clips"] == "13260"

    # Fig. 5 over the real frames: --clips is the listed dataset's --root. (No search for a query OTAM gets wrong:
    # up to 300 episodes of the full-width head, minutes on a CPU.)
    drawn = []
    monkeypatch.setattr(report, "contrast_query", lambda *args: None)
    monkeypatch.setattr(report, "plot_stage_activations",
                        lambda *args: drawn.append(args) or open(args[-1], "wb").close())
    draw_report(str(cell / "results"), str(cell / "finetune"), root)
    frames, maps, _, _ = drawn[0]
    assert frames.shape == (2, 32, 32, 3) and set(maps) == {"backbone", "ifce", "ivce", "iece"}


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:--weights random")
def test_finetune_and_extract_plans_write_nothing(tmp_path):
    root = gym99_root(tmp_path / "gym99", files={"train": (6, 6), "val": (5, 2), "test": (2, 3)})
    out = tmp_path / "out"
    tiny = ["--weights", "random", "--frames", "2", "--crop", "32", "--workers", "0", "--device", "cpu"]
    extract = CliRunner().invoke(main, ["extract", "--dataset", "gym99", "--root", root, "--out", str(out / "c.h5"),
                                        "--splits", "val,test", "--plan", *tiny])
    assert extract.exit_code == 0, extract.output
    assert "val 10/4,410 clips, 5/12 classes" in extract.output
    assert "extract 16 clips x 1 views x 2 frames" in extract.output
    assert "cache ~0.00 GB for --splits val,test (every split's 52 present clips" in extract.output
    finetune = CliRunner().invoke(main, ["finetune", "--dataset", "gym99", "--root", root, "--out", str(out / "run"),
                                         "--episodes", "10", "--val-every", "5", "--val-episodes", "3", "--plan",
                                         *tiny])
    assert finetune.exit_code == 0, finetune.output
    assert "finetune 10 episodes x 5-way x (1 + 5) clips x 2 frames = 600 frames" in finetune.output
    assert "validation 2 x 3 episodes x 5 x (1 + 1) x 2 = 120 frames" in finetune.output
    assert "frame folders of the 46 present clips" in finetune.output
    assert not out.exists()


def _touch_root(root, files):
    """Empty files named like listed Gym99 clips ({split: (classes, clips)}); refused before anything decodes them."""
    for split, entries in load_split_lists("gym99").items():
        n_classes, n_clips = files.get(split, (0, 0))
        for label in list(dict.fromkeys(label for label, _ in entries))[:n_classes]:
            for clip_id in [c for lab, c in entries if lab == label][:n_clips]:
                os.makedirs(root / label, exist_ok=True)
                (root / label / f"{clip_id}.mp4").touch()
    return str(root)


def _refused(args, out, *words):
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and all(w in lines[0] for w in words), result.output
    assert not os.path.exists(out), os.listdir(out)  # nothing half-written: no run folder, no cache, no lock file


@pytest.mark.filterwarnings("ignore:--weights random")
def test_a_root_with_no_listed_clip_is_refused_before_anything_is_written(tmp_path):
    root = tmp_path / "gym99"
    (root / "x").mkdir(parents=True)
    (root / "x" / "not_a_gym99_clip.mp4").touch()
    _refused(["reproduce", "--dataset", "gym99", "--root", str(root), "--out", str(tmp_path / "r"), *TINY],
             tmp_path / "r", "none of the 34,841 gym99 clips listed for train, val, test is there")
    _refused(["finetune", "--dataset", "gym99", "--root", str(root), "--out", str(tmp_path / "f"), "--weights",
              "random"], tmp_path / "f", "none of the 21,581 gym99 clips listed for train, val is there")
    out = tmp_path / "c"
    _refused(["extract", "--dataset", "gym99", "--root", str(root), "--out", str(out / "cache.h5"), "--weights",
              "random", "--splits", "test"], out, "none of the 13,260 gym99 clips listed for test is there")


def test_a_split_that_cannot_give_one_episode_is_refused_before_training(tmp_path):
    # val holds 4 classes: a 5-way episode needs 5. test holds 6 classes of 2 clips: reproduce evaluates with the
    # paper preset's 5 queries, so each class needs 6 clips.
    root = _touch_root(tmp_path / "gym99", {"train": (6, 6), "val": (4, 2), "test": (6, 2)})
    _refused(["reproduce", "--dataset", "gym99", "--root", root, "--out", str(tmp_path / "r"), *TINY], tmp_path / "r",
             "reproduce needs episodes", "val has 4 classes with the 2 clips an episode takes of a class, --way 5 "
             "needs 5", "test has 0 classes with the 6 clips")
    _refused(["finetune", "--dataset", "gym99", "--root", root, "--out", str(tmp_path / "f"), "--weights", "random",
              "--val-episodes", "2"], tmp_path / "f", "finetune needs episodes", "val has 4 classes")


def test_the_counts_the_plan_and_the_readme_use():
    config = finetune_config(ReproduceConfig(dataset="gym99", root="r"))  # the paper preset: 60 000 episodes
    frames = finetune_frames(config)
    assert frames["train"] == 60_000 * 5 * (1 + 5) * 8 == 14_400_000
    assert frames["validations"] == 60 and frames["validation"] == 60 * 300 * 5 * (1 + 1) * 8
    assert extract_frames(13260, 8) == 106_080 and extract_frames(10, 8, views=3) == 240
    assert cache_bytes(1, 8) == 8 * 7 * 7 * 2048 * 2 and cache_bytes(1, 2, crop=32) == 2 * 2048 * 2
    clips = clip_counts("gym99")
    full, test = cache_bytes(sum(clips.values()), 8), cache_bytes(clips["test"], 8)
    assert test == 13260 * 8 * 7 * 7 * 2048 * 2  # ~21 GB of the full ~56 GB
    assert round(full / 1e9) == 56 and round(test / 1e9) == 21
