"""A reduced `m3net demo` end to end: generated clips -> cache -> M3Net head -> table + report."""
import json
import logging
from dataclasses import replace

import pytest
from click.testing import CliRunner

from m3net.cli import main
from m3net.data.synthetic import SyntheticConfig
from m3net.demo import DemoConfig, run_demo

PICTURES = ("accuracy.png", "accuracy_vs_shot.png", "predictions.png", "training.png", "alignment.png",
            "activations.png")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    config = DemoConfig(
        out=str(out), weights="random", frames=4, way=4, train_queries=1, train_episodes=30, val_every=15,
        val_episodes=10, eval_episodes=150, extra_shots=(3,), workers=0, device="cpu",
        head_options={**DemoConfig().head_options, "proj_dim": 64},
        synthetic=SyntheticConfig(train_classes=4, val_classes=4, test_classes=4, clips_per_class=5, frames=16),
    )
    return config, run_demo(config)[config.shot]


@pytest.mark.slow
def test_demo_writes_report_with_sane_numbers(demo):
    config, summary = demo
    report = f"{config.out}/report"
    saved = json.load(open(f"{report}/results.json"))
    assert saved["results"] == summary["results"]
    for name in PICTURES:
        with open(f"{report}/{name}", "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n", name
    heads = {r["head"] for r in summary["results"]}
    assert {"protonet", "tsn-cosine", "otam"} <= heads and any(h.startswith("m3net") for h in heads)
    for r in summary["results"]:
        assert 0 <= r["accuracy"] <= 100 and 0 < r["ci95"] < 20 and r["episodes"] == 150
    assert summary["demo"]["weights_used"] == "random"


@pytest.mark.slow
def test_demo_temporal_matching_beats_mean_pooling(demo):
    # The 4 test classes are one family: the same sub-actions in different orders (plus one
    # detail variant), so a mean-pooled prototype is near chance and order-aware matching is not.
    _, summary = demo
    acc = {(r["head"], r["view"]): r for r in summary["results"]}
    proto = acc[("protonet", "y")]
    otam = acc[("otam", "y")]
    m3net = next(r for (head, view), r in acc.items() if head.startswith("m3net") and view == "y")
    for temporal in (otam, m3net):
        assert temporal["accuracy"] - temporal["ci95"] > proto["accuracy"] + proto["ci95"]


@pytest.mark.slow
def test_demo_rerun_reuses_everything(demo, caplog):
    config, summary = demo
    caplog.set_level(logging.INFO, logger="m3net")  # the demo's notices are log lines (`m3net -q` hides them)
    again = run_demo(config)[config.shot]
    printed = caplog.text
    assert "reused" in printed and "reusing the finished run" in printed
    assert again["results"] == summary["results"]  # same seeded episodes, same checkpoint


@pytest.mark.parametrize("args, message", [(["--seeds", "0,x"], "--seeds 'x': expected an integer"),
                                           (["--seeds", "1,1"], "listed twice"),
                                           (["--seeds", "0", "--seeds", "-1"], "expected >= 0"),
                                           (["--record", "r.json"], "--record needs --seeds"),
                                           (["--collect"], "--collect needs --seeds"),
                                           (["--seeds", "0,1", "--collect"], "seed 0 has no finished demo")])
def test_demo_cli_refuses_bad_seed_options(tmp_path, args, message):
    result = CliRunner().invoke(main, ["demo", "--out", str(tmp_path / "demo"), *args])
    assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "demo").exists()  # refused before any work


@pytest.mark.slow
def test_demo_compare_trains_more_heads_on_the_same_cache_and_episodes(demo, caplog):
    config, summary = demo
    caplog.set_level(logging.INFO, logger="m3net")
    compared = run_demo(replace(config, compare=("pal",)))[config.shot]
    printed = caplog.text
    assert "reusing the finished run" in printed and "train the pal head" in printed  # M3Net reused, PAL trained
    rows = {(r["head"], r["view"]): r for r in compared["results"]}
    assert any(head.startswith("pal") for head, _ in rows)
    for key, row in {(r["head"], r["view"]): r for r in summary["results"]}.items():
        assert rows[key] == row  # the same episodes: every earlier head scores exactly as before
    assert {p["head"].split(" ")[0] for p in compared["paired"]} >= {"protonet", "tsn-cosine", "otam"}
    assert any(p["head"].startswith("pal") for p in compared["paired"])


@pytest.mark.parametrize("compare, message", [("nohead", "not a registered head"), ("m3net", "trains M3Net already"),
                                              ("protonet", "parameter-free"), ("pal,pal", "named twice")])
def test_demo_cli_refuses_bad_compare(tmp_path, compare, message):
    result = CliRunner().invoke(main, ["demo", "--out", str(tmp_path / "demo"), "--compare", compare])
    assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "demo").exists()


@pytest.mark.slow
def test_reference_comparison_record_renders_with_every_head_on_the_same_input(demo, tmp_path, monkeypatch):
    """demo --preset reference on the fixture's clips and cache: every trained head with its own recipe and the
    same standardised input, a head of --compare-once on the first seed only, and the README section from it."""
    import shutil

    from docs_results import render_table1_synthetic
    from m3net.demo import seeded, seeds_record
    from m3net.train import presets

    # the fixture's classes have 5 clips: the recipes' 4-7 training queries per class, less
    monkeypatch.setattr(presets, "RECIPES", tuple(replace(r, queries=2) for r in presets.RECIPES))

    config, _ = demo
    reference = replace(config, out=str(tmp_path), preset="reference", head_options={"proj_dim": 16},
                        compare=("pal",), compare_once=("m3net:proj_dim=8",), train_episodes=16, val_every=16,
                        val_episodes=4, patience=2, eval_episodes=20)
    first = seeded(reference, config.seed)
    shutil.copytree(f"{config.out}/synthetic", f"{first.out}/synthetic")
    shutil.copy(f"{config.out}/cache.h5", f"{first.out}/cache.h5")
    run_demo(first)
    record = seeds_record(reference, (config.seed,))
    trained = record["trained"][str(config.seed)]
    assert set(trained) == {"m3net (m3net)", "pal (pal)", "m3net (m3net-proj_dim-8)"}
    assert trained["pal (pal)"]["recipe"]["lr"] == 1e-4 and trained["pal (pal)"]["input_norm"] == "standardize"
    assert trained["pal (pal)"]["head_options"] == {"temperature": 1.0}  # the recipe's head option
    assert trained["m3net (m3net-proj_dim-8)"]["widths"]["width"] == 8
    text = render_table1_synthetic(record, "record.json")
    assert "| M3Net (d = 16) |" in text and "| PAL |" in text and "| M3Net (d = 8) |" in text
    assert "standardised per channel with the training split's statistics" in text


@pytest.mark.slow
def test_demo_collect_builds_the_record_from_seeds_run_elsewhere(demo, tmp_path):
    """--collect: the record of seed folders that ran in other processes, without training or scoring, equal to
    the record of the run itself; refused when a seed ran with other settings."""
    import shutil

    from m3net.demo import collect_seeds_record, seeded, seeds_record
    from m3net.errors import ConfigError

    config, summary = demo
    gathered = replace(config, out=str(tmp_path))
    alone = seeded(gathered, config.seed)  # the seed's demo run on its own (`--seeds 0` in another process)
    shutil.copytree(f"{config.out}/synthetic", f"{alone.out}/synthetic")
    shutil.copy(f"{config.out}/cache.h5", f"{alone.out}/cache.h5")
    run_demo(alone)
    record = collect_seeds_record(gathered, [config.seed])
    assert record["per_seed"][str(config.seed)]["1-shot"]["results"] == summary["results"]  # same seed, same run
    assert record["per_seed"] == seeds_record(gathered, [config.seed])["per_seed"]
    commits = record["seed_code_versions"][str(config.seed)]
    assert commits["demo"] and commits["cache"]  # both commits recorded by this version of the demo
    with pytest.raises(ConfigError, match="train_episodes: ran 30, asked 31"):
        collect_seeds_record(replace(gathered, train_episodes=31), [config.seed])


def test_seeds_summary_lists_every_head_and_view_with_its_spread_over_the_seeds():
    """What `m3net demo --seeds` prints at the end: each head and view, mean ± sd over the seeds per shot, a head
    of --compare-once over the seeds it ran on, and where the record went."""
    from m3net.demo import aggregate, format_seeds_summary, seed_checks

    def run(y, otam, wide=None):
        rows = [{"head": "m3net (m3net)", "view": "y1", "accuracy": y - 5},
                {"head": "m3net (m3net)", "view": "y", "accuracy": y}, {"head": "otam", "view": "y", "accuracy": otam}]
        paired = [{"head": "otam", "difference": otam - y, "ci95": 1.0}]
        if wide is not None:
            rows.append({"head": "m3net (m3net-proj_dim-0)", "view": "y", "accuracy": wide})
            paired.append({"head": "m3net (m3net-proj_dim-0)", "difference": wide - y, "ci95": 1.0})
        return {"results": rows, "paired": paired, "checks": seed_checks({"results": rows, "paired": paired})}

    per_seed = {"0": {"1-shot": run(80, 40, wide=70), "5-shot": run(90, 50, wide=85)},
                "1": {"1-shot": run(84, 44), "5-shot": run(92, 52)}}
    result = {"seeds": [0, 1], "config": {"eval_episodes": 600}, "over_seeds": aggregate(per_seed)}
    lines = format_seeds_summary(result, "benchmarks/demo.json").splitlines()
    assert lines[0] == "Accuracy % over seeds 0, 1, mean ± sd (600 test episodes per seed and shot):"
    assert [line.split() for line in lines[1:6]] == [
        ["head", "view", "1-shot", "5-shot"],
        ["m3net", "(m3net)", "y1", "77.00", "±", "2.83", "86.00", "±", "1.41"],
        ["m3net", "(m3net)", "y", "82.00", "±", "2.83", "91.00", "±", "1.41"],
        ["otam", "y", "42.00", "±", "2.83", "51.00", "±", "1.41"],
        ["m3net", "(m3net-proj_dim-0)", "y", "70.00", "(1", "seed)", "85.00", "(1", "seed)"]]
    assert lines[1].index("1-shot") == lines[2].index("77.00")  # columns line up
    assert lines[6:] == ["record: benchmarks/demo.json"]
    assert format_seeds_summary(result).splitlines()[-1] == "record: not written (no --record)"


@pytest.mark.usefixtures("aligned_head")
@pytest.mark.parametrize("every", [1, 4])
def test_a_diverging_head_does_not_stop_the_demo_and_is_recorded(cache, tmp_path, caplog, every):
    """A head whose loss turns non-finite (the run stops with its last finite state, here after a checkpoint and a
    validation, or before any): the demo logs it, goes on, treats the run as finished when it comes back, and its
    record says where it diverged."""
    from m3net.demo import run_record, train_or_reuse

    config = DemoConfig(out=str(tmp_path), lr=1e30, train_episodes=40, val_every=every, val_episodes=2, device="cpu",
                        input_norm="none")  # the shared cache holds no channel statistics
    caplog.set_level(logging.INFO, logger="m3net")
    run = train_or_reuse(config, cache, "test-aligned", {}, "aligned", "3/4")
    assert "the aligned head diverged" in caplog.text
    record = run_record(run)
    assert record["stopped_early"] and record["episodes_trained"] < record["diverged_at"] <= 40
    if every == 1:  # validated and saved at episode 1, before the loss turned non-finite
        assert record["episodes_trained"] == record["best_episodes"] == 1 and record["widths"]
    else:  # nothing saved: the record comes from its config.json
        assert record["episodes_trained"] == 0 and record["best_episodes"] is None and record["widths"] is None
    caplog.clear()
    assert train_or_reuse(config, cache, "test-aligned", {}, "aligned", "3/4") == run
    assert "reusing the finished run" in caplog.text  # not trained again: it would only diverge again
    assert ("it diverged before its first checkpoint" in caplog.text) == (every != 1)
