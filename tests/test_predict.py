"""`m3net predict`: support folder + query clips through the checkpoint's backbone and head."""
import json
import pathlib
import shutil

import pytest
from click.testing import CliRunner

from m3net.cli import main


@pytest.fixture(scope="module")
def trained(predictor_run, tmp_path_factory):
    return tmp_path_factory.mktemp("predict"), pathlib.Path(predictor_run.root), predictor_run.checkpoint


@pytest.mark.slow
def test_predict_prints_probabilities_per_query(trained):
    base, clips, checkpoint = trained
    test_classes = sorted(p.name for p in (clips / "test").iterdir())
    support = base / "support"
    queries = []
    for name in test_classes:  # 1-shot support from each test class, the other clips as queries
        files = sorted((clips / "test" / name).iterdir())
        (support / name).mkdir(parents=True)
        shutil.copy(files[0], support / name / files[0].name)
        queries += [str(f) for f in files[1:]]
    result = CliRunner().invoke(main, ["predict", "--checkpoint", checkpoint, "--support", str(support), "--json",
                                       *sum((["--query", q] for q in queries), [])])
    assert result.exit_code == 0, result.output
    predictions = json.loads(result.output[result.output.index("["):])
    assert [p["query"] for p in predictions] == queries
    for p in predictions:
        assert set(p["probabilities"]) == set(test_classes)
        assert sum(p["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert p["predicted"] == max(p["probabilities"], key=p["probabilities"].get)


@pytest.mark.slow
def test_predict_errors_are_clear(trained, tmp_path):
    base, clips, checkpoint = trained
    lonely = tmp_path / "support" / "only-class"
    lonely.mkdir(parents=True)
    clip = next((clips / "test").iterdir())
    shutil.copy(next(clip.iterdir()), lonely / "a.mp4")
    result = CliRunner().invoke(main, ["predict", "--checkpoint", checkpoint, "--support", str(tmp_path / "support"),
                                       "--query", str(lonely / "a.mp4")])
    assert result.exit_code != 0 and "at least 2 classes" in result.output
    missing = CliRunner().invoke(main, ["predict", "--checkpoint", checkpoint, "--support", str(clips / "test"),
                                        "--query", str(tmp_path / "nope.mp4")])
    assert missing.exit_code != 0 and "no such file" in missing.output
