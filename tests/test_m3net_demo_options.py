"""The M3Net head's options the offline demo turns on: input_norm and temperature_init."""
import pytest
import torch

from m3net.errors import ConfigError
from m3net.model import build_head

DIM, FRAMES = 16, 4


def episode(seed):
    g = torch.Generator().manual_seed(seed)
    support = 10 + torch.rand(6, FRAMES, 7, 7, DIM, generator=g)  # a large shared offset: nearly collinear frames
    query = 10 + torch.rand(6, FRAMES, 7, 7, DIM, generator=g)
    return support, torch.arange(3).repeat(2), query, torch.arange(3).repeat(2)


def head(**options):
    torch.manual_seed(0)
    return build_head("m3net", feature_dim=DIM, num_frames=FRAMES, **options)


def test_input_norm_uses_training_statistics_only():
    model = head(input_norm="standardize")
    support, support_labels, query, _ = episode(0)
    model.eval()
    untrained = model(support, support_labels, query)["y"]  # no statistics yet: the input passes through
    assert torch.allclose(untrained, head()(support, support_labels, query)["y"])
    model.train()
    model(support, support_labels, query)
    maps = torch.cat([support, query]).reshape(-1, DIM).double()
    norm = model.input_norm
    assert torch.allclose(norm.total / norm.count, maps.mean(dim=0))
    frozen = norm.count.clone()
    model.eval()
    model(*episode(1)[:3])  # evaluation does not move the statistics
    assert norm.count == frozen
    standardized = norm(torch.cat([support, query]))
    assert torch.allclose(standardized.reshape(-1, DIM).mean(dim=0), torch.zeros(DIM), atol=1e-4)
    assert torch.allclose(standardized.reshape(-1, DIM).std(dim=0), torch.ones(DIM), atol=1e-3)
    assert set(model.state_dict()) >= {"input_norm.count", "input_norm.total", "input_norm.total_squares"}


def test_data_temperature_gives_unit_spread_logits_on_the_first_training_episode():
    model = head(temperature_init="data")
    support, support_labels, query, _ = episode(0)
    model.eval()
    assert torch.allclose(model.log_temperature.exp(), torch.full((3,), 10.0))  # not in evaluation
    model.train()
    outputs = model(support, support_labels, query)
    for view in ("y1", "y2", "y3"):
        assert outputs[view].std(dim=-1).mean().item() == pytest.approx(1.0, rel=1e-4)
    after = model.log_temperature.detach().clone()
    model(support, support_labels, query)
    assert torch.equal(model.log_temperature.detach(), after)  # only once; then τ is learned as usual
    assert not model.temperature_pending


@pytest.mark.parametrize("option", [{"input_norm": "whiten"}, {"temperature_init": "auto"}])
def test_bad_option_values_are_config_errors(option):
    with pytest.raises(ConfigError):
        head(**option)


@pytest.mark.parametrize("input_norm", ["none", "standardize"])
def test_pooling_before_norm_and_projection_equals_the_papers_order(input_norm):
    """matcher_inputs pools to IFCE's n x n first; the paper's order (normalise and project all 7x7
    positions, then IFCE pools) must give the same features, in training (statistics update) and eval."""
    model = head(input_norm=input_norm, proj_dim=8).double()
    support, _, query, _ = episode(0)
    support, query = support.double(), query.double()
    for training in (True, False):
        model.train(training)
        if input_norm != "none":
            before = (model.input_norm.count.clone(), model.input_norm.total.clone())
        fast = model.matcher_inputs(support, query)
        maps = torch.cat([support, query])
        if input_norm != "none":  # the paper's order, with the statistics the call above saw
            assert model.input_norm.count == before[0] + (maps.numel() // DIM if training else 0)
            maps = model.input_norm.apply_statistics(maps)
        expected = model.encode(model.project(maps), support.shape[0])
        for source, (s, q) in fast.items():
            assert torch.allclose(s, expected[source][0], atol=1e-10), source
            assert torch.allclose(q, expected[source][1], atol=1e-10), source
