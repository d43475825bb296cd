"""The Python API (m3net/api.py): FewShotClassifier, open_cache, create_head, and the lazy top-level names."""
import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import m3net
from m3net.cli import main
from m3net.errors import CacheError, ConfigError, PredictError, WeightsError
from m3net.extract.video import Clip
from m3net.model.registry import parse_head_options

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def support_and_queries(predictor_run, tmp_path_factory):
    """A 1-shot support folder of the bench's test classes (first clip of each) and the other test clips."""
    test = pathlib.Path(predictor_run.root) / "test"
    support = tmp_path_factory.mktemp("support")
    queries = []
    for name in sorted(p.name for p in test.iterdir()):
        files = sorted((test / name).iterdir())
        (support / name).mkdir()
        shutil.copy(files[0], support / name / files[0].name)
        queries += [str(f) for f in files[1:]]
    return str(support), queries


@pytest.fixture(scope="module")
def classifier(predictor_run, support_and_queries):
    return m3net.FewShotClassifier.from_checkpoint(predictor_run.checkpoint, device="cpu").fit(support_and_queries[0])


@pytest.fixture(scope="module")
def predictions(classifier, support_and_queries):
    return classifier.predict(support_and_queries[1])


def test_import_m3net_does_not_import_torch():
    code = "import sys, m3net; assert 'torch' not in sys.modules, 'import m3net imported torch'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
    assert m3net.open_cache is m3net.api.open_cache and "FewShotClassifier" in dir(m3net)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        m3net.nope


def test_predictions_are_probabilities_per_view(classifier, support_and_queries, predictions):
    assert [p.query for p in predictions] == support_and_queries[1]
    for p in predictions:
        assert list(p.probabilities) == sorted(p.probabilities, key=p.probabilities.get, reverse=True)
        assert set(p.probabilities) == set(classifier.classes) and p.label == next(iter(p.probabilities))
        assert sum(p.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
        assert set(p.views) == {"y1", "y2", "y3", "y"} and p.views["y"] == pytest.approx(p.probabilities)
        # The m3net head's prediction is the mean of its views' softmaxes (paper §3.5).
        for name in classifier.classes:
            mean = np.mean([p.views[v][name] for v in ("y1", "y2", "y3")])
            assert p.probabilities[name] == pytest.approx(mean, abs=1e-6)


@pytest.mark.slow  # the CLI builds its own classifier
def test_api_and_cli_agree(predictor_run, support_and_queries, predictions):
    support, queries = support_and_queries
    result = CliRunner().invoke(main, ["predict", "--checkpoint", predictor_run.checkpoint, "--support", support,
                                       "--device", "cpu", "--json", *sum((["--query", q] for q in queries), [])])
    assert result.exit_code == 0, result.output
    cli = json.loads(result.output[result.output.index("["):])
    assert [c["query"] for c in cli] == [p.query for p in predictions] == queries
    assert [c["predicted"] for c in cli] == [p.label for p in predictions]
    assert [c["probabilities"] for c in cli] == [p.probabilities for p in predictions]  # exactly: one code path
    # --batch-size 1 (one clip a forward, not the cache's 4): the same scores up to rounding
    one = CliRunner().invoke(main, ["predict", "--checkpoint", predictor_run.checkpoint, "--support", support,
                                    "--device", "cpu", "--json", "--batch-size", "1", "--query", queries[0]])
    assert one.exit_code == 0, one.output
    (single,) = json.loads(one.output[one.output.index("["):])
    assert single["probabilities"] == pytest.approx(predictions[0].probabilities, abs=1e-3)


def test_a_path_its_decoded_frames_and_its_frame_folder_predict_the_same(classifier, support_and_queries, tmp_path):
    video = support_and_queries[1][0]
    clip = Clip(video)
    frames = clip.read(range(len(clip)))  # (T, H, W, 3) uint8: every frame of the clip
    for t, frame in enumerate(frames):  # the same frames as a frame folder (lossless PNG)
        Image.fromarray(frame).save(tmp_path / f"img_{t + 1:05d}.png")
    from_path, from_array, from_folder = classifier.predict([video, frames, tmp_path])
    assert from_array.query == "array #1" and from_folder.query == str(tmp_path)  # "array #<place in the list>"
    assert from_array.label == from_path.label == from_folder.label
    assert from_array.probabilities == from_path.probabilities == from_folder.probabilities


def test_clips_score_as_their_cache_rows(predictor_run, support_and_queries, classifier, predictions):
    """A clip's features through the API are its row in the cache `m3net extract` wrote, bit for bit, so
    the same clip scores the same from its file and from the cache."""
    cache = m3net.open_cache(predictor_run.cache)
    queries = support_and_queries[1]
    cached = cache.features([cache.video_ids.index(pathlib.Path(q).stem) for q in queries])
    assert np.array_equal(classifier.features(queries[:2]), cached[:2])
    assert classifier.predict_features(cached, queries) == predictions


def test_fit_features_from_a_cache_matches_fit_on_clips(predictor_run, support_and_queries, classifier):
    cache = m3net.open_cache(predictor_run.cache)
    support = {}
    for name in classifier.classes:  # the support folder's clips, read from the cache
        (clip,) = (pathlib.Path(support_and_queries[0]) / name).iterdir()
        support[name] = cache.features([cache.video_ids.index(clip.stem)])  # (1, T, H, W, C)
    # The checkpoint's head and backbone, through the plain constructor
    other = m3net.FewShotClassifier(classifier.head, classifier.extractor.model, crop=64, device="cpu",
                                    batch_size=classifier.batch_size).fit_features(support)
    queries = cache.features([cache.video_ids.index(pathlib.Path(q).stem) for q in support_and_queries[1]])
    assert other.classes == classifier.classes
    assert other.predict_features(queries) == classifier.predict_features(queries)


def test_open_cache_reads_a_cache_written_by_extract(predictor_run):
    cache = m3net.open_cache(predictor_run.cache)
    bench = pathlib.Path(predictor_run.root)
    for split in ("train", "val", "test"):
        clips = sorted(p.stem for p in (bench / split).glob("*/*"))
        assert cache.splits[split] == len(clips)
        assert sorted(cache.video_ids[i] for i in cache.rows(split)) == clips
    assert sorted(cache.classes) == sorted(p.name for p in bench.glob("*/*") if p.is_dir())
    assert cache.provenance["num_frames"] == 4 and cache.provenance["crop"] == 64
    assert cache.provenance["weights"] == "random" and "created" not in cache.provenance
    test = cache.features("test")
    assert test.dtype == np.float16 and test.shape == (cache.splits["test"], *cache.feature_shape)
    assert cache.feature_shape == (4, 2, 2, 2048)
    rows = cache.rows("test")[[2, 0]]
    assert np.array_equal(cache.features(rows), test[[2, 0]])
    labels = [cache.classes[label] for label in cache.labels[cache.rows("test")]]
    assert labels == [pathlib.Path(p).parent.name for p in sorted((bench / "test").glob("*/*"))]
    with pytest.raises(CacheError, match="unknown split 'dev'"):
        cache.features("dev")
    with pytest.raises(CacheError, match="out of range"):
        cache.features([len(cache)])


def test_create_head_takes_options_as_the_cli_parses_them():
    head = m3net.create_head("m3net", proj_dim="16", use_tm="off", cm_features="ivce,iece")
    assert head.config == type(head.config)(**parse_head_options("m3net", ["proj_dim=16", "use_tm=off",
                                                                             "cm_features=ivce,iece"]))
    assert head.config.proj_dim == 16 and head.config.use_tm is False
    assert head.config.cm_features == ("ivce", "iece")
    with pytest.raises(ConfigError, match="proj_dim"):
        m3net.create_head("m3net", proj_dim=-1)
    with pytest.raises(ConfigError, match="unknown head 'nope'"):
        m3net.create_head("nope")


def test_bad_queries_are_clear_errors(classifier, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a video\n")
    with pytest.raises(PredictError, match=f"cannot read {text}"):
        classifier.predict([str(text)])
    with pytest.raises(PredictError, match="no such file"):
        classifier.predict([str(tmp_path / "gone.mp4")])
    with pytest.raises(PredictError, match=r"cannot read array #0: expected uint8 frames .*float32"):
        classifier.predict([np.zeros((4, 8, 8, 3), np.float32)])
    with pytest.raises(PredictError, match="got one clip"):
        classifier.predict(str(text))


def test_bad_support_sets_are_clear_errors(support_and_queries, classifier, tmp_path):
    clip_a, clip_b = support_and_queries[1][:2]
    with pytest.raises(PredictError, match="class\\(es\\) 'beam' have no clips"):
        classifier.fit({"vault": [clip_a], "beam": []})
    with pytest.raises(PredictError, match="same number of clips .* found {'vault': 2, 'beam': 1}"):
        classifier.fit({"vault": [clip_a, clip_b], "beam": [clip_b]})
    with pytest.raises(PredictError, match="at least 2 classes"):
        classifier.fit({"vault": [clip_a]})
    with pytest.raises(PredictError, match="class 'vault': expected a list of clips, got one clip"):
        classifier.fit({"vault": clip_a, "beam": clip_b})
    (tmp_path / "vault").mkdir()
    (tmp_path / "beam").mkdir()
    shutil.copy(clip_a, tmp_path / "vault")
    with pytest.raises(PredictError, match=f"support {tmp_path}: class\\(es\\) 'beam' have no clips"):
        classifier.fit(tmp_path)
    with pytest.raises(PredictError, match="support features of class 'b': shape \\(1, 4, 2, 2, 16\\), expected "
                                           "\\(n, 4, 2, 2, 2048\\)"):
        classifier.fit_features({"a": np.zeros((1, 4, 2, 2, 2048), np.float16),
                                 "b": np.zeros((1, 4, 2, 2, 16), np.float16)})
    with pytest.raises(PredictError, match="query features: shape"):
        classifier.predict_features(np.zeros((1, 4, 7, 7, 2048), np.float16))
    assert classifier.classes == sorted(os.listdir(support_and_queries[0]))  # a refused fit changes nothing


def test_predict_before_fit_and_a_head_of_another_width():
    with pytest.raises(PredictError, match="predict before fit"):
        m3net.FewShotClassifier(m3net.create_head("protonet", num_frames=4), torch.nn.Identity()).predict([])
    with pytest.raises(PredictError, match="width C=16; the ResNet-50 backbone gives C=2048"):
        m3net.FewShotClassifier(m3net.create_head("protonet", feature_dim=16), torch.nn.Identity())


def test_a_checkpoint_whose_backbone_weights_are_missing(predictor_run, support_and_queries, tmp_path):
    state = torch.load(predictor_run.checkpoint, weights_only=True)
    state["provenance"] = {**state["provenance"], "weights": str(tmp_path / "tuned.pt"), "weights_sha256": "ab12"}
    moved = tmp_path / "best.pt"
    torch.save(state, moved)
    with pytest.raises(WeightsError, match=f"its backbone weights {tmp_path / 'tuned.pt'} are missing .* "
                                           "pass --weights PATH"):
        m3net.FewShotClassifier.from_checkpoint(moved, device="cpu")
    result = CliRunner().invoke(main, ["predict", "--checkpoint", str(moved), "--support", support_and_queries[0],
                                       "--query", support_and_queries[1][0]])
    assert result.exit_code == 1 and result.output.count("\n") == 1 and "are missing" in result.output
    other = tmp_path / "other.pt"
    torch.save({"conv1.weight": torch.zeros(1)}, other)
    with pytest.raises(WeightsError, match="sha256 differs"):
        m3net.FewShotClassifier.from_checkpoint(moved, weights=str(other), device="cpu")


def _python_blocks(markdown, after=""):
    text = markdown.read_text(encoding="utf-8")
    text = text[text.index(after):] if after else text
    section = text.split("\n## ", 2)[1] if after else text
    return [block.split("```", 1)[0] for block in section.split("```python\n")[1:]]


def test_readme_python_example_runs(tmp_path, monkeypatch, capsys):
    (example,) = _python_blocks(REPO / "README.md", after="\n## Python API")
    monkeypatch.chdir(tmp_path)
    exec(compile(example, "README.md", "exec"), {"__name__": "__readme__"})
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    for i, line in enumerate(lines):  # "array #i LABEL P"
        query, label, p = line.rsplit(" ", 2)
        assert query == f"array #{i}" and label in ("dark", "bright") and 0.5 <= float(p) <= 1


@pytest.mark.slow
def test_docs_api_example_runs(tmp_path, monkeypatch):
    blocks = _python_blocks(REPO / "docs" / "api.md")
    assert blocks
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__docs__"}
    for block in blocks:  # one example, in the order the page tells it
        exec(compile(block, "docs/api.md", "exec"), namespace)
