"""The ResNet-50 trunk: torchvision's architecture and parameter names, weights loading checks."""
import pytest
import torch

from m3net.extract.backbone import ResNet50Trunk, WeightsError, build_backbone


def _torchvision_models():
    try:
        import torchvision.models as models
    except Exception as err:  # its CUDA-linked wheel raises RuntimeError next to a CPU-only torch
        pytest.skip(f"torchvision does not import here: {type(err).__name__}")
    return models


def test_parameter_count_is_resnet50_without_fc():
    # torchvision's resnet50 has 25 557 032 parameters, of which the 1000-way fc holds 2 049 000.
    assert sum(p.numel() for p in ResNet50Trunk().parameters()) == 25_557_032 - 2_049_000


def test_same_outputs_as_torchvision_for_the_same_weights():
    models = _torchvision_models()
    torch.manual_seed(0)
    reference = models.resnet50().eval()
    trunk = ResNet50Trunk().eval()
    trunk.load_state_dict({k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")})
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        expected = torch.nn.Sequential(*list(reference.children())[:-2])(x)
        torch.testing.assert_close(trunk(x), expected)


def test_local_weights_file_is_checked(tmp_path):
    good = ResNet50Trunk().state_dict()
    full = {**{f"module.{k}": v for k, v in good.items()}, "fc.weight": torch.zeros(1000, 2048)}
    path = tmp_path / "full.pth"
    torch.save(full, path)  # DDP prefix and a classifier: both accepted
    model, provenance = build_backbone(str(path))
    assert provenance["weights"] == str(path) and len(provenance["weights_sha256"]) == 64
    bad = dict(good)
    bad["conv1.weight"] = torch.zeros(64, 3, 3, 3)
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(WeightsError, match="wrong shape"):
        build_backbone(str(tmp_path / "bad.pth"))
    with pytest.raises(WeightsError, match="not a file"):
        build_backbone(str(tmp_path / "missing.pth"))


def test_random_weights_warn_and_are_seeded():
    with pytest.warns(UserWarning, match="no ImageNet"):
        a, prov = build_backbone("random", seed=3)
    with pytest.warns(UserWarning):
        b, _ = build_backbone("random", seed=3)
    assert prov["weights_sha256"] == "random-seed-3"
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
