import pytest
import torch

from graftkit.errors import GraftkitError
from vision_ext.models import CifarResNet, LeNet, resnet20, resnet110


@pytest.mark.parametrize("size", [8, 28])
def test_lenet_shapes_and_features(size):
    torch.manual_seed(0)
    model = LeNet(in_channels=1, num_classes=10, input_size=size).eval()
    x = torch.rand(3, 1, size, size)
    feats = model.features(x)
    assert feats.shape == (3, 84)
    logits = model(x)
    assert logits.shape == (3, 10)
    torch.testing.assert_close(logits, model.fc3(feats))


def test_resnet20_and_110_shapes_and_parameter_counts():
    torch.manual_seed(0)
    r20 = resnet20().eval()
    x = torch.rand(2, 3, 32, 32)
    assert r20.features(x).shape == (2, 64)
    assert r20(x).shape == (2, 10)
    n20 = sum(p.numel() for p in r20.parameters())
    n110 = sum(p.numel() for p in resnet110().parameters())
    assert 0.26e6 < n20 < 0.29e6 and 1.7e6 < n110 < 1.75e6
    small = resnet20(in_channels=1, num_classes=4, input_size=8).eval()
    assert small(torch.rand(2, 1, 8, 8)).shape == (2, 4)


@pytest.mark.parametrize("shape, message", [((2, 3, 8, 8), "channel"), ((2, 1, 7, 8), "8x8"),
                                            ((1, 8, 8), "batch")])
def test_wrong_images_are_named(shape, message):
    with pytest.raises(GraftkitError, match=message):
        LeNet(input_size=8)(torch.rand(*shape))
    with pytest.raises(GraftkitError, match=message):
        resnet20(in_channels=1, input_size=8)(torch.rand(*shape))


def test_bad_configs():
    with pytest.raises(GraftkitError, match="multiple of 4"):
        LeNet(input_size=10)
    with pytest.raises(GraftkitError, match="6n\\+2"):
        CifarResNet(21)
