"""Datasets: shipped split lists, clip id rules, locating clips under --root, the folder layout."""
import json
import os

import pytest
from click.testing import CliRunner

from m3net.cli import main as cli_main
from m3net.data.datasets import DatasetError, frame_files, load_dataset, load_split_lists, parse_clip_id, scan_root

# Classes and clips per split (train, val, test) of the published M3Net lists (m3net/splits/README.md).
EXPECTED = {
    "gym99": ((61, 17171), (12, 4410), (26, 13260)),
    "gym288": ((128, 19176), (25, 4863), (61, 14534)),
    "diving48": ((27, 12676), (5, 669), (15, 3652)),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_split_counts_and_every_id_parses(name):
    lists = load_split_lists(name)
    for split, (classes, clips) in zip(("train", "val", "test"), EXPECTED[name]):
        assert len({label for label, _ in lists[split]}) == classes
        assert len(lists[split]) == clips
    labels = [{label for label, _ in lists[s]} for s in ("train", "val", "test")]
    assert not (labels[0] & labels[1] or labels[0] & labels[2] or labels[1] & labels[2])  # few-shot: disjoint
    ids = [clip_id for s in lists.values() for _, clip_id in s]
    assert len(set(ids)) == len(ids)
    for clip_id in ids:
        fields = parse_clip_id(name, clip_id)
        assert clip_id.startswith(fields["youtube_id"] + "_")
    summary = load_dataset(name).summary()
    assert [(e["classes"], e["clips"]) for e in summary["splits"].values()] == list(EXPECTED[name])


def test_finegym_id_fields():
    fields = parse_clip_id("gym99", "f6k7PBGgeb4_E_000779_000876_A_0048_0049")
    assert fields == {"youtube_id": "f6k7PBGgeb4", "event_start": 779, "event_end": 876,
                      "action_start": 48, "action_end": 49}
    # Youtube ids may hold '_' and '-' and even look like the markers.
    assert parse_clip_id("gym288", "a_E_-b-cE_F_E_000001_000002_A_0003_0004")["youtube_id"] == "a_E_-b-cE_F"
    for bad in ("f6k7PBGgeb4_E_779_876_A_0048_0049", "f6k7PBGgeb4_00012", "f6k7PBGgeb4_E_000779_000876_A_0048"):
        with pytest.raises(ValueError, match="expected <youtube id>_E_"):
            parse_clip_id("gym99", bad)


def test_diving48_id_splits_on_last_underscore():
    assert parse_clip_id("diving48", "_tigfCJFLZg_00366") == {"youtube_id": "_tigfCJFLZg", "index": 366}
    assert parse_clip_id("diving48", "TeboS8s_00w_00094") == {"youtube_id": "TeboS8s_00w", "index": 94}
    assert parse_clip_id("diving48", "Q--70-ELqLw_00012")["youtube_id"] == "Q--70-ELqLw"
    for bad in ("TeboS8s_00w_0094", "TeboS8s_00w", "abc_123456"):
        with pytest.raises(ValueError, match="<youtube id>_<5 digits>"):
            parse_clip_id("diving48", bad)


def _touch(path, data=b"x"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(data)


def test_scan_root_finds_videos_and_frame_folders(tmp_path):
    _touch(tmp_path / "flat_a.mp4")
    _touch(tmp_path / "cls" / "in_class.webm")
    _touch(tmp_path / "cls" / "other.MKV")
    _touch(tmp_path / "deep" / "x" / "old.avi")
    _touch(tmp_path / "notes.txt")
    for n in (10, 2, 1):  # numeric order, whatever the padding
        _touch(tmp_path / "cls" / "framed" / f"frame_{n:04d}.png")
    _touch(tmp_path / "frames2" / "00001.jpg")
    found = scan_root(str(tmp_path))
    assert set(found) == {"flat_a", "in_class", "other", "old", "framed", "frames2"}
    assert found["framed"] == str(tmp_path / "cls" / "framed")
    assert frame_files(found["framed"]) == [
        (1, "frame_", "frame_0001.png"), (2, "frame_", "frame_0002.png"), (10, "frame_", "frame_0010.png")]
    with pytest.raises(DatasetError, match="not a directory"):
        scan_root(str(tmp_path / "nope"))


def test_listed_dataset_counts_found_and_missing(tmp_path):
    lists = load_split_lists("diving48")
    label, first = lists["val"][0]
    _, second = lists["test"][3]
    _touch(tmp_path / label / f"{first}.mp4")  # in a class folder
    _touch(tmp_path / second / "img_00001.jpg")  # a frame folder, flat
    dataset = load_dataset("diving48", str(tmp_path))
    found = {c.clip_id: c.path for c in dataset.clips if c.path}
    assert found == {first: str(tmp_path / label / f"{first}.mp4"), second: str(tmp_path / second)}
    assert len(dataset.missing) == sum(len(v) for v in lists.values()) - 2
    summary = dataset.summary()
    assert summary["splits"]["val"]["found"] == 1 and summary["splits"]["val"]["missing"] == 668
    assert summary["splits"]["train"]["missing_examples"][0] == lists["train"][0][1]
    clip = next(c for c in dataset.clips if c.clip_id == first)
    assert dataset.classes[clip.label] == label and clip.split == "val"


def test_folder_layouts(tmp_path):
    flat = tmp_path / "flat"
    for cls in ("jump", "spin"):
        for i in range(2):
            _touch(flat / cls / f"clip{i}.mp4")
    _touch(flat / "spin" / "readme.txt")
    dataset = load_dataset("folder", str(flat))
    assert dataset.classes == ["jump", "spin"]
    assert {c.split for c in dataset.clips} == {"test"}
    # Stems repeat across classes: ids become relative paths, so they stay unique.
    assert sorted(c.clip_id for c in dataset.clips) == ["jump/clip0", "jump/clip1", "spin/clip0", "spin/clip1"]
    assert {c.split for c in load_dataset("folder", str(flat), folder_split="train").clips} == {"train"}

    split = tmp_path / "split"
    _touch(split / "train" / "a" / "t1.mp4")
    _touch(split / "val" / "b" / "v1.webm")
    _touch(split / "test" / "c" / "x1" / "img_001.jpg")
    dataset = load_dataset("folder", str(split))
    assert [(c.clip_id, dataset.classes[c.label], c.split) for c in dataset.clips] == [
        ("t1", "a", "train"), ("v1", "b", "val"), ("x1", "c", "test")]
    with pytest.raises(DatasetError, match="no clips found"):
        load_dataset("folder", str(tmp_path / "flat" / "jump"))
    with pytest.raises(DatasetError, match="unknown"):
        load_dataset("kinetics", str(flat))


def test_dataset_info_cli(tmp_path):
    lists = load_split_lists("gym99")
    label, clip_id = lists["test"][0]
    _touch(tmp_path / label / f"{clip_id}.mp4")
    result = CliRunner().invoke(cli_main, ["dataset-info", "--dataset", "gym99", "--root", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["splits"]["test"] == {"classes": 26, "clips": 13260, "found": 1, "missing": 13259,
                                      "missing_examples": [c for _, c in lists["test"][1:6]]}
    text = CliRunner().invoke(cli_main, ["dataset-info", "--dataset", "gym288"]).output
    assert "128 classes" in text and "19176 clips" in text


def test_synthetic_dataset_follows_its_manifest(tmp_path):
    entries = [{"id": f"syn00{c}_00{k}", "class": f"cls{c}", "split": split,
                "path": f"{split}/cls{c}/syn00{c}_00{k}.mp4"}
               for c, split in [(0, "train"), (1, "test")] for k in range(2)]
    (tmp_path / "manifest.json").write_text(json.dumps({"clips": entries}))
    for entry in entries[:3]:  # the last clip was never written
        _touch(tmp_path / entry["path"])
    dataset = load_dataset("synthetic", str(tmp_path))
    assert [c.clip_id for c in dataset.clips] == [e["id"] for e in entries]
    assert dataset.classes == ["cls0", "cls1"] and [c.split for c in dataset.clips] == ["train"] * 2 + ["test"] * 2
    assert dataset.missing == ["syn001_001"]
    with pytest.raises(DatasetError, match="manifest.json not found"):
        load_dataset("synthetic", str(tmp_path / "train"))
