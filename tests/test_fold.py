"""BatchNorm folding: the same function as the trained network, with the norms gone where a convolution feeds them."""

import pytest
import torch
from torch import nn

from medxfer import cams, models
from medxfer.fold import FOLDED, fold_batchnorm


def _trained_like(arch: str, in_chans: int = 3) -> nn.Module:
    """A model whose norms hold running statistics and affine terms far from the identity, as after training."""
    model = models.create(arch, 2, in_chans).eval()
    generator = torch.Generator().manual_seed(0)
    for norm in model.modules():
        if isinstance(norm, nn.BatchNorm2d):
            for tensor, low, high in ((norm.running_mean, -0.5, 0.5), (norm.running_var, 0.5, 2.0)):
                tensor.copy_(torch.empty_like(tensor).uniform_(low, high, generator=generator))
            with torch.no_grad():
                norm.weight.uniform_(0.5, 1.5, generator=generator)
                norm.bias.uniform_(-0.2, 0.2, generator=generator)
    return model


def _norms(model: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


@pytest.mark.parametrize(
    ("arch", "expect_all"), [("efficientnet_lite0", True), ("resnet18", True), ("densenet121", False)]
)
def test_folding_keeps_the_function_and_removes_the_norms_a_convolution_feeds(arch, expect_all):
    model = _trained_like(arch)
    folded = fold_batchnorm(model)
    x = models.normalize(torch.randint(0, 256, (4, 3, 64, 64), dtype=torch.uint8))
    with torch.inference_mode():
        expected, got = model(x), folded(x)
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(expected[0], expected[1])  # outputs vary with the input: the comparison tests something
    assert getattr(folded, FOLDED) == _norms(model) - _norms(folded) > 0
    # DenseNet normalises concatenations: those norms have no single convolution to go into and stay
    assert (_norms(folded) == 0) == expect_all
    assert _norms(model) > 0  # the original is untouched
    first_conv = next(m for m in folded.modules() if isinstance(m, nn.Conv2d))
    assert first_conv.weight.is_contiguous(memory_format=torch.channels_last)  # the layout models.create gives


def test_loading_folds_on_request_and_by_default_gives_the_trained_network(tmp_path):
    model = _trained_like("efficientnet_lite0", in_chans=1)
    meta = {"arch": "efficientnet_lite0", "classes": ["a", "b"], "in_chans": 1, "input_size": [1, 32, 32]}
    models.save(tmp_path, model, meta)
    folded, unfolded = models.load(tmp_path, fold=True)[0], models.load(tmp_path)[0]
    assert _norms(folded) == 0 and _norms(unfolded) == _norms(model)
    x = models.normalize(torch.randint(0, 256, (3, 1, 32, 32), dtype=torch.uint8))
    with torch.inference_mode():
        assert torch.equal(unfolded(x), model(x))
        assert torch.allclose(folded(x), model(x), atol=1e-4, rtol=1e-4)


def test_grad_cam_draws_the_same_map_on_the_folded_model():
    model = _trained_like("efficientnet_lite0")
    # seeded: on an image whose Grad-CAM is all negative, the map is 0 and float rounding decides its normalised max
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    layer = model.feature_info[-2]["module"]
    plain = cams.heatmaps("gradcam", model, images.numpy(), [0, 1], layer)
    folded = cams.heatmaps("gradcam", fold_batchnorm(model), images.numpy(), [0, 1], layer)
    assert (plain.reshape(2, -1).max(axis=1) > 0.5).all()
    assert abs(plain - folded).max() < 1e-3


class _Branching(nn.Module):
    """A network whose forward branches on its data: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.norm = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.conv(x))
        return y if y.sum() > 0 else -y


def test_a_model_that_cannot_be_traced_comes_back_unfolded_and_says_so(caplog):
    model = _Branching().eval()
    with torch.no_grad():
        model.norm.running_mean.uniform_(-0.5, 0.5)
    with caplog.at_level("WARNING", logger="medxfer.fold"):
        folded = fold_batchnorm(model)
    assert getattr(folded, FOLDED) == 0 and _norms(folded) == 1 and folded is not model
    assert "_Branching cannot be traced" in caplog.text
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(folded(x), model(x))
