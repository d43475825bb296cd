"""A matcher over several encoders (Table 3) from the command line: train-head logs, and evaluate scores,
every (encoder, matcher) view."""
import csv
import json

from click.testing import CliRunner
from helpers_cache import order_only_cache

from m3net.cli import main
from m3net.train.checkpoint import load_checkpoint

VIEWS = ["y1", "y2.ifce", "y2.ivce", "y2.iece", "y3"]


def test_train_head_and_evaluate_report_each_encoder_view(tmp_path):
    cache = str(order_only_cache(tmp_path / "order.h5"))
    run, results = tmp_path / "run", tmp_path / "results"
    runner = CliRunner()
    trained = runner.invoke(main, ["train-head", "--cache", cache, "--out", str(run), "--head", "m3net",
                                   "--head-opt", "cm_features=ifce,ivce,iece", "--head-opt", "patch_grid=2",
                                   "--way", "3", "--episodes", "4", "--log-every", "2", "--val-every", "2",
                                   "--val-episodes", "2", "--device", "cpu"])
    assert trained.exit_code == 0, trained.output
    saved = load_checkpoint(run / "best.pt")
    assert saved["head_config"]["cm_features"] == ("ifce", "ivce", "iece")
    assert {key for key in saved["model"] if key.startswith("cm.")} == {
        f"cm.{source}.{w}.weight" for source in ("ifce", "ivce", "iece") for w in ("w_q", "w_k", "w_v")}
    with open(run / "train_log.csv") as fh:
        logged = [dict(item.split("=") for item in row["views_loss"].split()) for row in csv.DictReader(fh)]
    assert logged and all(list(views) == VIEWS for views in logged)

    scored = runner.invoke(main, ["evaluate", "--checkpoint", str(run / "best.pt"), "--way", "3",
                                  "--episodes", "4", "--out", str(results)])
    assert scored.exit_code == 0, scored.output
    rows = json.loads((results / "results.json").read_text())["results"]
    assert sorted(r["view"] for r in rows) == sorted(VIEWS + ["y"])
    for view in VIEWS:
        assert f" {view} " in scored.output
