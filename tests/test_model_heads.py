"""Every registered head: the forward contract, fp16 input, inductive scoring, a few SGD steps."""
import pytest
import torch

from m3net.errors import ConfigError
from m3net.model import build_head, list_heads

DIM, FRAMES = 32, 5  # small C and T keep the whole file within a few seconds


def make_episode(n_way, shots, queries, seed=0, dtype=torch.float32):
    """Sparse non-negative maps (like post-ReLU ResNet features), supports in shuffled class order."""
    g = torch.Generator().manual_seed(seed)
    support_labels = torch.arange(n_way).repeat_interleave(shots)
    support_labels = support_labels[torch.randperm(len(support_labels), generator=g)]
    query_labels = torch.arange(n_way).repeat_interleave(queries)
    support = torch.randn(len(support_labels), FRAMES, 7, 7, DIM, generator=g).relu().to(dtype)
    query = torch.randn(len(query_labels), FRAMES, 7, 7, DIM, generator=g).relu().to(dtype)
    return support, support_labels, query, query_labels


def build(name, **options):
    torch.manual_seed(0)
    return build_head(name, feature_dim=DIM, num_frames=FRAMES, **options)


def test_registry_lists_every_head():
    table1 = {"tsn-cosine", "protonet", "otam", "pal", "trx", "strm", "hyrsm"}  # the paper's Table 1 baselines
    assert table1 | {"m3net"} <= set(list_heads())


@pytest.mark.parametrize("name", list_heads())
@pytest.mark.parametrize("n_way, shots, queries", [(2, 1, 1), (3, 2, 3), (5, 3, 2), (4, 1, 2), (5, 1, 1)])
def test_contract_shapes(name, n_way, shots, queries):
    head = build(name)
    support, support_labels, query, _ = make_episode(n_way, shots, queries, seed=n_way * 10 + shots)
    outputs = head(support, support_labels, query)
    assert "y" in outputs
    for view, logits in outputs.items():
        assert logits.shape == (n_way * queries, n_way), view
        assert torch.isfinite(logits).all(), view


@pytest.mark.parametrize("name", list_heads())
def test_fp16_input_accepted(name):
    head = build(name).eval()  # eval: heads with dropout (trx, strm, hyrsm) would draw new masks per call
    support, support_labels, query, _ = make_episode(3, 2, 2, dtype=torch.float16)
    outputs = head(support, support_labels, query)
    full = head(support.float(), support_labels, query.float())
    for view, logits in outputs.items():
        assert logits.dtype == torch.float32 and torch.isfinite(logits).all(), view
        # fp16 is a storage format: the head computes in its own dtype, so the inputs' rounding
        # is all that differs from a float32 run.
        assert torch.allclose(logits, full[view], atol=1e-5), view


@pytest.mark.parametrize("name", list_heads())
def test_query_prediction_independent_of_other_queries(name):
    """Inductive scoring: adding or removing queries leaves every other query's logits unchanged."""
    head = build(name).eval()
    support, support_labels, query, _ = make_episode(3, 2, 3)
    with torch.no_grad():
        everything = head(support, support_labels, query)
        first_two = head(support, support_labels, query[:2])
        last_alone = head(support, support_labels, query[-1:])
    for view in everything:
        assert torch.allclose(everything[view][:2], first_two[view], atol=1e-5), view
        assert torch.allclose(everything[view][-1:], last_alone[view], atol=1e-5), view


def test_transductive_iece_does_depend_on_other_queries():
    """The inductive test above can fail: the transductive IECE option mixes queries."""
    head = build("m3net", iece_transductive=True, use_im=False, use_cm=False).eval()
    support, support_labels, query, _ = make_episode(3, 2, 3)
    with torch.no_grad():
        everything = head(support, support_labels, query)["y3"]
        first_two = head(support, support_labels, query[:2])["y3"]
    assert not torch.allclose(everything[:2], first_two, atol=1e-5)


# PAL's only weights are one residual attention over frozen mean-pooled clips, with no projection
# of the query: it cannot reorder a random episode's cosines. Its learning is tested on a generated
# cache instead (test_model_table1_heads.py).
CANNOT_FIT_A_RANDOM_EPISODE = {"pal"}


@pytest.mark.parametrize("name", [name for name in list_heads()
                                  if build(name).trainable and name not in CANNOT_FIT_A_RANDOM_EPISODE])
def test_sgd_steps_reduce_loss_on_a_fixed_episode(name):
    """Gradient steps fit one episode. In eval mode: dropout noise (trx, strm, hyrsm) swamps the
    signal of this tiny C=32 episode. Clipped: the reference TRX/STRM distances are unnormalised
    squared norms whose plain-SGD steps overshoot."""
    head = build(name).eval()
    support, support_labels, query, query_labels = make_episode(3, 2, 2)
    optimizer = torch.optim.SGD(head.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for _ in range(40):
        loss = head.loss(head(support, support_labels, query), query_labels)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(head.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


@pytest.mark.parametrize("name", [name for name in list_heads() if not build(name).trainable])
def test_parameter_free_heads_have_no_parameters(name):
    assert not list(build(name).parameters())


def test_unequal_shots_rejected_by_stacking_heads():
    support, support_labels, query, _ = make_episode(2, 2, 1)
    support_labels = torch.tensor([0, 0, 0, 1])
    for name in ("m3net", "trx", "strm"):
        with pytest.raises(ValueError, match="same number of supports"):
            build(name)(support, support_labels, query)


def test_unknown_option_is_an_error():
    with pytest.raises(ConfigError, match="no option"):
        build("m3net", use_everything=True)


@pytest.mark.parametrize("name", [name for name in list_heads() if build(name).input_pool() is not None])
def test_pooling_on_load_gives_the_heads_own_result(name):
    """input_pool() = n promises that maps pooled to n x n first (--pool-on-load) score the same."""
    head = build(name).double().eval()
    support, support_labels, query, _ = make_episode(3, 2, 2)
    support, query = support.double(), query.double()
    n = head.input_pool()

    def pooled(maps):  # (X, T, 7, 7, C) -> (X, T, n, n, C)
        flat = maps.flatten(0, 1).permute(0, 3, 1, 2)
        return torch.nn.functional.adaptive_avg_pool2d(flat, n).permute(0, 2, 3, 1).unflatten(0, maps.shape[:2])

    with torch.no_grad():
        full = head(support, support_labels, query)
        from_pooled = head(pooled(support), support_labels, pooled(query))
    for view, logits in full.items():
        assert torch.allclose(logits, from_pooled[view], atol=1e-9), view
