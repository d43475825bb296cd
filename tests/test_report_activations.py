"""Fig. 5 of `m3net report`: per-stage activation maps of a query (backbone, + IFCE, + IVCE, + IECE)."""
import json
import os

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from helpers_cache import order_only_cache

from m3net import report
from m3net.errors import ConfigError
from m3net.model import build_head
from m3net.report import draw_report, plot_stage_activations, stage_activation_maps
from m3net.train.evaluate import EvalConfig, evaluate, write_summary
from m3net.train.train_head import TrainConfig, train_head

T, C, S, Q = 4, 16, 3, 3


def tiny_head(dtype=torch.float32, **options):
    torch.manual_seed(0)
    head = build_head("m3net", **{"feature_dim": C, "num_frames": T, "proj_dim": 8, "patch_grid": 2, **options})
    return head.to(dtype).eval()


def episode(dtype=torch.float32, seed=1):
    generator = torch.Generator().manual_seed(seed)
    support = torch.randn(S, T, 7, 7, C, generator=generator, dtype=dtype)
    query = torch.randn(Q, T, 7, 7, C, generator=generator, dtype=dtype)
    return support, query


@pytest.mark.parametrize("options, side", [
    ({}, 2),
    ({"input_norm": "center"}, 2),
    ({"use_ifce": False}, 7),  # IVCE / IECE read the projected 7x7 map
    ({"use_ifce": False, "proj_dim": 0}, 7),  # ... or the cached map itself
    ({"use_ifce": False, "input_norm": "center"}, 7),
    ({"use_ifce": False, "proj_dim": 0, "input_norm": "standardize"}, 7),
])
def test_maps_have_the_stage_shapes(options, side):
    maps = stage_activation_maps(tiny_head(**options), *episode(), query_index=1)
    assert list(maps) == ["backbone", "ifce", "ivce", "iece"]
    assert maps["backbone"].shape == (T, 7, 7)
    for stage in ("ivce", "iece"):
        assert maps[stage].shape == (T, side, side) and np.isfinite(maps[stage]).all()
    assert (maps["ifce"] is None) == (options.get("use_ifce") is False)


def _scaled(tokens, t, p, factor):
    """tokens (T, P, d) with token (t, p) multiplied by ``factor``."""
    scale = torch.ones(tokens.shape[:2] + (1,), dtype=tokens.dtype)
    scale[t, p] = factor
    return tokens * scale


def test_maps_match_independent_oracles():
    # backbone / IFCE: closed form <z_p, mean z> / P; IVCE / IECE: z·dE/dz is the derivative of the
    # energy when one token is scaled by (1 + eps), taken here by central differences through the
    # head's submodules (no autograd, no hook).
    head = tiny_head(torch.float64)
    support, query = episode(torch.float64)
    i = 2
    maps = stage_activation_maps(head, support, query, query_index=i)

    def projection(tokens):  # (T, P, d) -> (T, P)
        return (tokens * tokens.mean(dim=1, keepdim=True)).sum(-1) / tokens.shape[1]

    raw = query[i].flatten(1, 2)
    np.testing.assert_allclose(maps["backbone"].reshape(T, -1), projection(raw).numpy(), rtol=1e-10)
    with torch.no_grad():
        tokens = head.ifce(head.project(torch.cat([support, query])))  # (S+Q, T, P, d)
        np.testing.assert_allclose(maps["ifce"].reshape(T, -1), projection(tokens[S + i]).numpy(), rtol=1e-10)
        support_frames, query_frames = tokens[:S].mean(dim=2), tokens[S:].mean(dim=2)

        def ivce_energy(z):
            return head.ivce(z[None])[0].pow(2).sum() / 2

        def iece_energy(z):
            frames = torch.cat([query_frames[:i], z.mean(dim=1)[None], query_frames[i + 1:]])
            return head.iece(support_frames, frames)[1][i].pow(2).sum() / 2

        eps = 1e-6
        for stage, energy in (("ivce", ivce_energy), ("iece", iece_energy)):
            z = tokens[S + i]
            oracle = np.array([[float(energy(_scaled(z, t, p, 1 + eps)) - energy(_scaled(z, t, p, 1 - eps))) / (2 * eps)
                                for p in range(4)] for t in range(T)])
            np.testing.assert_allclose(maps[stage].reshape(T, -1), oracle, rtol=1e-5, atol=1e-8 * np.abs(oracle).max())


def test_maps_without_ifce_match_finite_differences_through_the_head():
    # IFCE off: the tokens are the cached 7x7 map, and the gradient runs back through input_norm and the
    # projection; the oracle scales one position of the query's cached map and re-runs the head.
    head = tiny_head(torch.float64, use_ifce=False, input_norm="standardize")
    support, query = episode(torch.float64)
    head.train().matcher_inputs(support, query)  # training statistics for input_norm
    head.eval()
    i = 0
    maps = stage_activation_maps(head, support, query, query_index=i)
    eps = 1e-6
    with torch.no_grad():
        for stage in ("ivce", "iece"):
            def energy(clip):
                return head.matcher_inputs(support, torch.cat([query[:i], clip[None], query[i + 1:]]))[stage][1][i] \
                    .pow(2).sum() / 2

            z = query[i].flatten(1, 2)  # (T, 49, C)
            oracle = np.array([[float(energy(_scaled(z, t, p, 1 + eps).view(query[i].shape))
                                      - energy(_scaled(z, t, p, 1 - eps).view(query[i].shape))) / (2 * eps)
                                for p in range(49)] for t in range(T)])
            np.testing.assert_allclose(maps[stage].reshape(T, -1), oracle, rtol=1e-5, atol=1e-8 * np.abs(oracle).max())


def test_maps_follow_the_encoder_weights():
    head = tiny_head()
    support, query = episode()
    before = stage_activation_maps(head, support, query, 0)
    assert not np.allclose(before["ivce"], before["ifce"]) and not np.allclose(before["iece"], before["ifce"])
    changed = {}
    scaled = {"ivce": head.ivce.channel_mixing, "iece": head.iece.channel_mixing, "ifce": head.ifce.mlp}
    for stage, layers in scaled.items():
        with torch.no_grad():
            for p in layers.parameters():
                p.mul_(1.5)
        after = stage_activation_maps(head, support, query, 0)
        changed[stage] = {name: not np.allclose(before[name], after[name]) for name in before}
        before = after
    # each encoder's weights move its own row (and, for IFCE, the rows that read its tokens), never the backbone's
    assert changed["ivce"] == {"backbone": False, "ifce": False, "ivce": True, "iece": False}
    assert changed["iece"] == {"backbone": False, "ifce": False, "ivce": False, "iece": True}
    assert changed["ifce"] == {"backbone": False, "ifce": True, "ivce": True, "iece": True}


def test_maps_leave_the_head_as_it_was():
    head = tiny_head(input_norm="center").train()
    count = head.input_norm.count.clone()
    stage_activation_maps(head, *episode(), 0)
    assert head.training and torch.equal(head.input_norm.count, count)  # not counted as training maps
    assert all(p.grad is None for p in head.parameters())


def test_switched_off_encoder_draws_an_off_row(tmp_path, monkeypatch):
    maps = stage_activation_maps(tiny_head(use_ivce=False), *episode(), 0)
    assert maps["ivce"] is None and maps["iece"] is not None
    figures = []
    monkeypatch.setattr(report.plt, "close", figures.append)
    frames = np.random.default_rng(0).integers(0, 255, size=(T, 32, 32, 3), dtype=np.uint8)
    for shown in (frames, None):  # over the frames, and alone when the clip is not on disk
        path = tmp_path / f"activations-{shown is None}.png"
        plot_stage_activations(shown, maps, "title", path)
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        rows = figures[-1].axes[0].get_gridspec().nrows
        assert rows == 4 + (shown is not None)
        ivce_row = figures[-1].axes[(rows - 2) * T:(rows - 1) * T]
        assert all([t.get_text() for t in ax.texts] == ["off"] for ax in ivce_row)
        assert ivce_row[0].get_ylabel() == "+ IVCE"
        plt.close(figures[-1])


def test_other_heads_are_refused_clearly():
    with pytest.raises(ConfigError, match="need an m3net head, not 'otam'"):
        stage_activation_maps(build_head("otam", feature_dim=C, num_frames=T), *episode(), 0)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(order_only_cache(tmp_path_factory.mktemp("cache") / "order.h5", frames=T))


def _trained(cache, base, head, head_options):
    run = str(base / "run")
    train_head(TrainConfig(cache=cache, out=run, head=head, head_options=head_options, way=3, shot=1, queries=1,
                           episodes=2, val_every=2, val_episodes=2, checkpoint_every=2, device="cpu"), progress=False)
    results = str(base / "results")
    summary = evaluate(EvalConfig(cache=cache, checkpoints=(os.path.join(run, "best.pt"),), way=3, episodes=3,
                                  device="cpu"), progress=False)
    write_summary(summary, results)
    return run, results


def test_report_draws_every_stage_of_an_m3net_run(cache, tmp_path, monkeypatch):
    # use_im off: no I-M, so no search for a query OTAM gets wrong (fast); IECE off: an "off" row
    options = {"proj_dim": 8, "patch_grid": 2, "use_im": False, "use_iece": False}
    run, results = _trained(cache, tmp_path, "m3net", options)
    drawn = []
    monkeypatch.setattr(report, "plot_stage_activations", lambda *args: drawn.append(args) or open(args[-1], "wb"))
    written = draw_report(results, run)
    assert os.path.join(results, "activations.png") in written
    frames, maps, title, _ = drawn[0]
    assert frames is None  # no --clips: the maps alone
    assert maps["ifce"].shape == maps["ivce"].shape == (T, 2, 2) and maps["iece"] is None
    with open(os.path.join(results, "results.json")) as fh:
        assert json.load(fh)["config"]["split"] in title


@pytest.mark.usefixtures("aligned_head")
def test_report_of_another_head_draws_the_backbone_only(cache, tmp_path, capsys):
    run, results = _trained(cache, tmp_path, "test-aligned", {})
    written = draw_report(results, run)
    assert os.path.join(results, "activations.png") in written
    assert "head 'test-aligned' has no context encoders; drawing the backbone's map only" in capsys.readouterr().err


def test_report_reads_only_the_rows_of_the_episodes_it_draws(cache, tmp_path, monkeypatch):
    """The test split is never loaded whole: the features read are those of the episode drawn (a Gym99 test split
    holds ~21 GB)."""
    from m3net.cache import RowReader, load_cache
    from m3net.data.episodes import EpisodeSampler

    options = {"proj_dim": 8, "patch_grid": 2, "use_im": False}  # no I-M: no search, episode 0 is drawn
    run, results = _trained(cache, tmp_path, "m3net", options)
    read = []
    monkeypatch.setattr(RowReader, "read", lambda self, rows, read_rows=RowReader.read: read.append(list(rows))
                        or read_rows(self, rows))
    monkeypatch.setattr(report, "plot_stage_activations", lambda *args: open(args[-1], "wb").close())
    draw_report(results, run)
    with open(os.path.join(results, "results.json")) as fh:
        cfg = json.load(fh)["config"]
    meta = load_cache(cache, splits=(cfg["split"],), features=False)
    first = EpisodeSampler(meta.labels, meta.split, cfg["split"], cfg["way"], cfg["shot"], cfg["queries"],
                           seed=cfg["seed"]).episode(0)
    drawn = set(meta.rows[np.concatenate([first.support_rows, first.query_rows])].tolist())
    assert read and all(set(rows) == drawn for rows in read) and len(drawn) < len(meta.rows)
