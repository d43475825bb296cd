"""M3Net's modules: gradients, ablation switches, and each matcher/baseline against a literal oracle."""
import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from m3net.errors import ConfigError
from m3net.model import build_head
from m3net.model.encoders import IECE
from m3net.model.matchers import CategoryMatching, instance_matching, task_matching

DIM, FRAMES = 32, 5
VIEWS = {"im": "y1", "cm": "y2", "tm": "y3"}


def episode(n_way=3, shots=2, queries=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    support_labels = torch.arange(n_way).repeat(shots)  # interleaved: 0 1 2 0 1 2
    support = torch.randn(n_way * shots, FRAMES, 7, 7, DIM, generator=g).relu()
    query = torch.randn(n_way * queries, FRAMES, 7, 7, DIM, generator=g).relu()
    return support, support_labels, query, torch.arange(n_way).repeat_interleave(queries)


def m3net(**options):
    torch.manual_seed(0)
    return build_head("m3net", feature_dim=DIM, num_frames=FRAMES, **options)


# ---------------------------------------------------------------------------------------------
# gradients and switches
# ---------------------------------------------------------------------------------------------

def test_every_module_receives_gradient():
    head = m3net()
    support, support_labels, query, query_labels = episode()
    head.loss(head(support, support_labels, query), query_labels).backward()
    for module in ("ifce", "ivce", "iece", "cm"):
        for name, parameter in getattr(head, module).named_parameters():
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, f"{module}.{name}"
    assert (head.log_temperature.grad != 0).all()


def test_loss_is_the_sum_of_the_view_cross_entropies():
    head = m3net()
    support, support_labels, query, query_labels = episode()
    outputs = head(support, support_labels, query)
    expected = sum(F.cross_entropy(outputs[v], query_labels) for v in ("y1", "y2", "y3"))
    assert torch.allclose(head.loss(outputs, query_labels), expected)


# Table 2 (encoders x one matcher) and Table 4 (matcher combinations) settings.
ABLATIONS = [
    dict(use_ifce=False, use_ivce=False, use_iece=False, use_cm=False, use_tm=False),
    dict(use_ivce=False, use_iece=False, use_cm=False, use_tm=False),
    dict(use_ifce=False, use_ivce=False, use_iece=False, use_im=False, use_tm=False),
    dict(use_ifce=False, use_iece=False, use_im=False, use_tm=False),
    dict(use_im=False, use_tm=False),
    dict(use_ifce=False, use_ivce=False, use_iece=False, use_im=False, use_cm=False),
    dict(use_ifce=False, use_im=False, use_cm=False),
    dict(use_im=False, use_cm=False),
    dict(use_im=False),
    dict(use_cm=False),
    dict(use_tm=False),
    dict(),
]


@pytest.mark.parametrize("options", ABLATIONS)
def test_ablation_switches(options):
    head = m3net(**options)
    support, support_labels, query, _ = episode()
    outputs = head(support, support_labels, query)
    views = [view for matcher, view in VIEWS.items() if options.get(f"use_{matcher}", True)]
    assert set(outputs) == set(views) | {"y"}
    summed = sum(torch.softmax(outputs[view], dim=-1) for view in views)
    assert torch.allclose(outputs["y"], summed)
    assert torch.allclose(outputs["y"].sum(dim=-1), torch.full((len(query),), float(len(views))))
    assert torch.allclose(head.probabilities(outputs).sum(dim=-1), torch.ones(len(query)))
    # A switched-off encoder owns no parameters (it passes its input through).
    for encoder, matcher in (("ifce", None), ("ivce", "cm"), ("iece", "tm")):
        used = options.get(f"use_{encoder}", True) and (matcher is None or options.get(f"use_{matcher}", True))
        assert (getattr(head, encoder) is not None) == used, encoder


def test_all_matchers_off_is_an_error():
    with pytest.raises(ConfigError, match="every matcher is switched off"):
        m3net(use_im=False, use_cm=False, use_tm=False)


def test_bad_feature_source_is_an_error():
    with pytest.raises(ConfigError, match="tm_features"):
        m3net(tm_features="ivc")


def test_table3_routing_changes_the_matched_features():
    """tm_features picks the encoder T-M reads: IVCE-fed and IECE-fed T-M give different logits."""
    support, support_labels, query, _ = episode()
    iece_fed = m3net(use_im=False, use_cm=False)(support, support_labels, query)["y3"]
    ivce_fed = m3net(use_im=False, use_cm=False, tm_features="ivce")(support, support_labels, query)["y3"]
    assert ivce_fed.shape == iece_fed.shape and not torch.allclose(ivce_fed, iece_fed)


@pytest.mark.parametrize("source", ["ifce", "ivce", "iece"])
def test_every_matcher_reads_any_encoder_and_stays_inductive(source):
    head = m3net(im_features=source, cm_features=source, tm_features=source, dtw_mode="soft").eval()
    support, support_labels, query, _ = episode(queries=2)
    with torch.no_grad():
        everything = head(support, support_labels, query)
        first = head(support, support_labels, query[:1])
    for view in ("y1", "y2", "y3", "y"):
        assert everything[view].shape == (len(query), 3) and torch.isfinite(everything[view]).all()
        assert torch.allclose(everything[view][:1], first[view], atol=1e-5), view


def test_ivce_rejects_a_different_clip_length():
    support, support_labels, query, _ = episode()
    with pytest.raises(ValueError, match="num_frames=5"):
        m3net()(support[:, :4], support_labels, query[:, :4])


def test_fixed_temperature_is_not_a_parameter():
    head = m3net(learn_temperature=False, temperature=3.0)
    assert "log_temperature" not in dict(head.named_parameters())
    assert torch.allclose(head.log_temperature.exp(), torch.full((3,), 3.0))


# ---------------------------------------------------------------------------------------------
# one matcher over several encoders (Table 3)
# ---------------------------------------------------------------------------------------------

# The default head's state-dict keys as they were before a matcher could read several encoders:
# checkpoints of the paper's head must keep loading.
DEFAULT_KEYS = [
    "log_temperature", "temperature_pending", "ifce.pos", "ifce.alpha", "ifce.w_q.weight", "ifce.w_k.weight",
    "ifce.w_v.weight", "ifce.mlp.0.weight", "ifce.mlp.0.bias", "ifce.mlp.2.weight", "ifce.mlp.2.bias",
    "ifce.mlp.4.weight", "ifce.mlp.4.bias", "ivce.pos", "ivce.token_mixing.0.weight", "ivce.token_mixing.0.bias",
    "ivce.token_mixing.2.weight", "ivce.token_mixing.2.bias", "ivce.channel_mixing.mlp.0.weight",
    "ivce.channel_mixing.mlp.0.bias", "ivce.channel_mixing.mlp.2.weight", "ivce.channel_mixing.mlp.2.bias",
    "iece.token_mixing.0.self_weight", "iece.token_mixing.0.set_weight", "iece.token_mixing.0.bias",
    "iece.token_mixing.2.self_weight", "iece.token_mixing.2.set_weight", "iece.token_mixing.2.bias",
    "iece.channel_mixing.mlp.0.weight", "iece.channel_mixing.mlp.0.bias", "iece.channel_mixing.mlp.2.weight",
    "iece.channel_mixing.mlp.2.bias", "iece.meta_norm.weight", "iece.meta_norm.bias", "iece.conv.weight",
    "iece.conv.bias", "cm.w_q.weight", "cm.w_k.weight", "cm.w_v.weight",
]
ALL = "ifce,ivce,iece"


def test_default_head_keeps_its_state_dict_keys_and_view_names():
    head = m3net()
    assert list(head.state_dict()) == DEFAULT_KEYS
    assert head.views == head.train_views == ("y1", "y2", "y3")
    # a checkpoint's head_config from before tuples (one encoder name per matcher) rebuilds the same head
    old = m3net(im_features="ifce", cm_features="ivce", tm_features="iece")
    assert old.config == head.config and list(old.state_dict()) == DEFAULT_KEYS


def test_cm_over_three_encoders_has_three_views_with_their_own_parameters():
    head = m3net(cm_features=ALL)  # text, as --head-opt gives it
    assert head.config.cm_features == ("ifce", "ivce", "iece")
    views = ("y1", "y2.ifce", "y2.ivce", "y2.iece", "y3")
    assert head.views == head.train_views == views
    assert head.log_temperature.shape == (5,)
    assert isinstance(head.cm, torch.nn.ModuleDict) and set(head.cm) == {"ifce", "ivce", "iece"}
    pointers = {p.data_ptr() for p in head.cm.parameters()}
    assert len(pointers) == 9  # W_Q, W_K, W_V of each C-M, none shared
    support, support_labels, query, query_labels = episode()
    outputs = head(support, support_labels, query)
    assert set(outputs) == set(views) | {"y"}
    assert torch.allclose(outputs["y"], sum(torch.softmax(outputs[v], dim=-1) for v in views))
    assert torch.allclose(head.probabilities(outputs).sum(dim=-1), torch.ones(len(query)))
    loss = head.loss(outputs, query_labels)
    assert torch.allclose(loss, sum(F.cross_entropy(outputs[v], query_labels) for v in views))
    loss.backward()
    for name, parameter in head.cm.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    assert (head.log_temperature.grad != 0).all()


@pytest.mark.parametrize("matcher, view", [("im", "y1"), ("cm", "y2"), ("tm", "y3")])
def test_each_encoder_view_equals_a_single_encoder_head(matcher, view):
    """Oracle: view <matcher>.<encoder> of a head reading all three encoders is the single-encoder
    head's view for that encoder, given the same encoder, C-M and temperature parameters."""
    only = {"im": dict(use_cm=False, use_tm=False), "cm": dict(use_im=False, use_tm=False),
            "tm": dict(use_im=False, use_cm=False)}[matcher]
    several = m3net(**{f"{matcher}_features": ALL}, **only).eval()
    with torch.no_grad():
        several.log_temperature.copy_(torch.tensor([1.5, 2.0, 0.5]))
    support, support_labels, query, _ = episode()
    with torch.no_grad():
        outputs = several(support, support_labels, query)
    for i, source in enumerate(("ifce", "ivce", "iece")):
        single = m3net(**{f"{matcher}_features": source}, **only).eval()
        state = {key: value for key, value in several.state_dict().items() if not key.startswith("cm.")}
        state.update({key.replace(f"cm.{source}.", "cm."): value for key, value in several.state_dict().items()
                      if key.startswith(f"cm.{source}.")})
        state["log_temperature"] = several.log_temperature[i:i + 1].detach().clone()
        missing, _ = single.load_state_dict(state, strict=False)  # ``several`` also holds encoders it lacks
        assert not missing
        with torch.no_grad():
            expected = single(support, support_labels, query)[view]
        assert torch.allclose(outputs[f"{view}.{source}"], expected, atol=1e-6), source
    assert not torch.allclose(outputs[f"{view}.ifce"], outputs[f"{view}.iece"])


def test_relabelling_the_classes_permutes_every_views_logits():
    head = m3net(im_features=ALL, cm_features=ALL, tm_features="ivce,iece").eval()
    support, support_labels, query, _ = episode()
    relabel = torch.tensor([2, 0, 1])  # class c is called relabel[c]
    with torch.no_grad():
        before = head(support, support_labels, query)
        after = head(support, relabel[support_labels], query)
    assert len(before) == 3 + 3 + 2 + 1
    for view, logits in before.items():
        assert torch.allclose(after[view][:, relabel], logits, atol=1e-5), view


def test_data_temperature_is_set_per_view():
    head = m3net(cm_features=ALL, tm_features="ifce,iece", temperature_init="data")
    support, support_labels, query, _ = episode()
    outputs = head(support, support_labels, query)  # training mode: the first episode sets every τ_i
    assert len(head.views) == 6 and not head.temperature_pending
    for view in head.views:
        assert outputs[view].std(dim=-1).mean().item() == pytest.approx(1.0, rel=1e-4), view


def test_fixed_temperature_has_one_value_per_view():
    head = m3net(tm_features=ALL, learn_temperature=False, temperature=2.0)
    assert torch.allclose(head.log_temperature.exp(), torch.full((5,), 2.0))


@pytest.mark.parametrize("value, message", [("ifce,ivc", "cm_features=ifce,ivc: 'ivc' is not an encoder"),
                                            ("ivce,ivce", "names an encoder twice"),
                                            ((), "expected one or more")])
def test_bad_encoder_lists_are_config_errors(value, message):
    with pytest.raises(ConfigError, match=message):
        m3net(cm_features=value)


def test_head_opt_parses_encoder_lists():
    from m3net.model.registry import parse_head_options

    options = parse_head_options("m3net", ["cm_features=ifce,ivce,iece", "tm-features=ivce"])
    assert options == {"cm_features": ("ifce", "ivce", "iece"), "tm_features": ("ivce",)}


# ---------------------------------------------------------------------------------------------
# oracles
# ---------------------------------------------------------------------------------------------

def dtw_path_average(cost):
    """Literal DTW on one (T, T) numpy cost: the optimal path's total cost / its number of cells."""
    n, m = cost.shape
    total = np.full((n, m), np.inf)
    length = np.zeros((n, m), dtype=int)
    for i in range(n):
        for j in range(m):
            if i == 0 and j == 0:
                total[i, j], length[i, j] = cost[0, 0], 1
                continue
            preds = [(i - 1, j - 1), (i - 1, j), (i, j - 1)]  # tie order: diagonal, up, left
            preds = [p for p in preds if p[0] >= 0 and p[1] >= 0]
            best = min(preds, key=lambda p: total[p])
            total[i, j], length[i, j] = cost[i, j] + total[best], length[best] + 1
    return total[-1, -1] / length[-1, -1]


def unit(a):
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


def cosine_matrix(a, b):
    return 1 - unit(a) @ unit(b).T


def test_instance_matching_matches_literal_dtw():
    g = torch.Generator().manual_seed(1)
    query = torch.randn(2, 6, 8, generator=g, dtype=torch.float64)
    support = torch.randn(1, 4, 6, 8, generator=g, dtype=torch.float64)
    labels = torch.tensor([1, 0, 1, 0])
    got = instance_matching(query, support, labels, 2, mode="hard")
    for q in range(2):
        pair = [dtw_path_average(cosine_matrix(query[q].numpy(), support[0, s].numpy())) for s in range(4)]
        expected = [np.mean([pair[s] for s in range(4) if labels[s] == c]) for c in range(2)]
        np.testing.assert_allclose(got[q].numpy(), expected, rtol=1e-10)


def test_hard_instance_matching_gradient_is_the_dtw_gradient():
    from m3net.kernels import dtw, dtw_path
    from m3net.model.episode_ops import class_mean_distance, cosine_cost_all_pairs

    g = torch.Generator().manual_seed(8)
    query, support = torch.randn(2, 5, 8, generator=g), torch.randn(1, 4, 5, 8, generator=g)
    labels = torch.tensor([0, 1, 0, 1])
    q1, q2 = query.clone().requires_grad_(True), query.clone().requires_grad_(True)
    instance_matching(q1, support, labels, 2, mode="hard").sum().backward()
    cost = cosine_cost_all_pairs(q2, support).flatten(0, 1)
    pair = dtw(cost, mode="hard") / dtw_path(cost.detach()).sum(dim=(1, 2))
    class_mean_distance(pair.view(2, 4), labels, 2).sum().backward()
    assert torch.allclose(q1.grad, q2.grad, atol=1e-6)


def test_soft_instance_matching_approaches_hard_for_small_gamma():
    g = torch.Generator().manual_seed(2)
    query, support = torch.randn(2, 5, 8, generator=g), torch.randn(1, 4, 5, 8, generator=g)
    labels = torch.tensor([0, 1, 0, 1])
    hard = instance_matching(query, support, labels, 2, mode="hard")
    soft = instance_matching(query, support, labels, 2, mode="soft", gamma=1e-3)
    assert torch.allclose(soft, hard, atol=1e-2) and (soft <= hard + 1e-6).all()  # soft-min <= min


def test_task_matching_matches_literal_nearest_frames():
    g = torch.Generator().manual_seed(3)
    query = torch.randn(3, 4, 8, generator=g, dtype=torch.float64)
    support = torch.randn(3, 4, 4, 8, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 1, 1, 0])
    got = task_matching(query, support, labels, 2)  # per-query supports (G = Q)
    for q in range(3):
        pair = []
        for s in range(4):
            a, b = unit(query[q].numpy()), unit(support[q, s].numpy())
            d = np.linalg.norm(a[:, None] - b[None], axis=-1)
            pair.append(d.min(axis=1).mean() + d.min(axis=0).mean())
        expected = [np.mean([pair[s] for s in range(4) if labels[s] == c]) for c in range(2)]
        np.testing.assert_allclose(got[q].numpy(), expected, rtol=1e-8)


def test_category_matching_matches_per_pair_loop():
    torch.manual_seed(4)
    matcher = CategoryMatching(8, 6).double()
    query, support = torch.randn(2, 4, 8, dtype=torch.float64), torch.randn(1, 6, 4, 8, dtype=torch.float64)
    labels = torch.tensor([2, 0, 1, 1, 0, 2])
    got = matcher(query, support, labels, 3)
    wq, wk, wv = matcher.w_q.weight.T, matcher.w_k.weight.T, matcher.w_v.weight.T

    def rebuild(target, source):
        return torch.softmax(target @ wq @ (source @ wk).T / np.sqrt(6), dim=-1) @ source @ wv

    def distance(a, b):  # mean over frames of the euclidean norm between unit-normalised frames
        return (a / a.norm(dim=-1, keepdim=True) - b / b.norm(dim=-1, keepdim=True)).norm(dim=-1).mean()

    for q in range(2):
        for c in range(3):
            prototype = torch.cat([support[0, s] for s in range(6) if labels[s] == c])  # (K·T, d)
            expected = (distance(query[q] @ wv, rebuild(query[q], prototype))
                        + distance(prototype @ wv, rebuild(prototype, query[q])))
            assert torch.allclose(got[q, c], expected), (q, c)


def test_iece_inductive_equals_transductive_for_one_query_and_is_permutation_equivariant():
    torch.manual_seed(5)
    inductive, transductive = IECE(8), IECE(8, transductive=True)
    transductive.load_state_dict(inductive.state_dict())
    support, query = torch.randn(4, 3, 8), torch.randn(1, 3, 8)
    s_ind, q_ind = inductive(support, query)
    s_tra, q_tra = transductive(support, query)
    assert torch.allclose(s_ind, s_tra) and torch.allclose(q_ind, q_tra)
    order = torch.tensor([2, 0, 3, 1])
    s_perm, q_perm = inductive(support[order], query)
    assert torch.allclose(s_perm, s_ind[:, order]) and torch.allclose(q_perm, q_ind)
    # the episode context is used: another support set changes the query's encoding
    _, q_other = inductive(support + 1, query)
    assert not torch.allclose(q_other, q_ind)


def test_otam_head_matches_eager_loop():
    from m3net.kernels.eager import eager_otam

    support, support_labels, query, _ = episode(2, 2, 1, seed=6)
    head = build_head("otam", feature_dim=DIM, num_frames=FRAMES, gamma=0.1)
    got = head(support, support_labels, query)["y"]
    for q in range(len(query)):
        pair = []
        for s in range(len(support)):
            cost = torch.tensor(cosine_matrix(query[q].mean(dim=(1, 2)).numpy(),
                                              support[s].mean(dim=(1, 2)).numpy()))[None]
            pair.append(eager_otam(cost, 0.1) + eager_otam(cost.transpose(1, 2), 0.1))
        for c in range(2):
            expected = -torch.stack([pair[s] for s in range(len(support)) if support_labels[s] == c]).mean()
            assert torch.allclose(got[q, c].double(), expected.double(), atol=1e-5)


def test_tsn_cosine_matches_direct_computation():
    support, support_labels, query, _ = episode(3, 2, 1, seed=7)
    head = build_head("tsn-cosine", feature_dim=DIM, num_frames=FRAMES, temperature=1.0)
    got = head(support, support_labels, query)["y"]
    for c in range(3):
        prototype = support[support_labels == c].mean(dim=(0, 1, 2, 3))
        expected = F.cosine_similarity(query.mean(dim=(1, 2, 3)), prototype[None], dim=-1)
        assert torch.allclose(got[:, c], expected, atol=1e-6)


def test_trx_triples_option_and_tuple_count():
    head = build_head("trx", feature_dim=DIM, num_frames=FRAMES, cardinalities=(2, 3), attention_dim=16)
    frames = torch.randn(2, FRAMES, DIM)
    triples = len(list(itertools.combinations(range(FRAMES), 3)))
    assert head.transformers[1].tuples(frames).shape == (2, triples, 3 * DIM)
    support, support_labels, query, _ = episode(3, 1, 2)
    assert head(support, support_labels, query)["y"].shape == (6, 3)


@pytest.mark.parametrize("name, options",
                         [("otam", {}), ("m3net", dict(use_ifce=False, use_ivce=False, use_iece=False))])
def test_matching_runs_outside_autocast(name, options):
    """Class distances differ below bf16 resolution: matching must not be rounded by AMP."""
    torch.manual_seed(0)
    head = build_head(name, feature_dim=DIM, num_frames=FRAMES, **options)
    support, support_labels, query, _ = episode()
    full = head(support, support_labels, query)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = head(support, support_labels, query)
    for view in full:
        assert mixed[view].dtype == torch.float32 and torch.allclose(mixed[view], full[view], atol=1e-6), view
