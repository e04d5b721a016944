"""Dense evaluation of batches of whole images of different sizes (VGG section 3.2), in the model
helper and through the Lightning module."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from alexnet.models.dense import dense_posteriors
from alexnet.models.vgg import VGGCifar
from alexnet.training.module import Classifier

CIFAR_A = {"name": "vgg_cifar", "config": "A", "num_classes": 10, "width": 0.25}


@pytest.fixture(scope="module")
def net() -> VGGCifar:
    torch.manual_seed(0)
    return VGGCifar("A", width=0.25).eval()


def test_dense_posteriors_match_image_by_image(net):
    torch.manual_seed(1)
    a, b, c = torch.randn(3, 32, 40), torch.randn(3, 48, 32), torch.randn(3, 32, 40)
    multi = (torch.randn(3, 32, 32), torch.randn(3, 64, 64))  # one image at two test scales
    with torch.no_grad():
        probs = dense_posteriors(net, [a, b, c, multi])
        one_by_one = [net.dense_scores(x[None])[0] for x in (a, b, c)]
        one_by_one.append(
            (net.dense_scores(multi[0][None])[0] + net.dense_scores(multi[1][None])[0]) / 2
        )
    assert probs.shape == (4, 10) and probs.dtype == torch.float32
    torch.testing.assert_close(probs, torch.stack(one_by_one), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(probs.sum(1), torch.ones(4))


def test_dense_posteriors_need_a_dense_network():
    from alexnet.models import build_model

    with pytest.raises(ValueError, match="aug.eval=dense needs a network with dense evaluation"):
        dense_posteriors(build_model("alexnet_cifar", num_classes=10), [torch.zeros(3, 32, 32)])


def test_module_scores_a_list_batch_densely():
    torch.manual_seed(0)
    module = Classifier(model=CIFAR_A).eval()
    images = [torch.randn(3, 32, 32) * 50, torch.randn(3, 40, 56) * 50]
    y = torch.tensor([3, 7])
    with torch.no_grad():
        log_probs = module(images)
        expected = dense_posteriors(module.net, images).log()
    torch.testing.assert_close(log_probs, expected)
    # a 32x32 image scored densely = the soft-max of the FC path, averaged with its mirror image
    with torch.no_grad():
        x = images[0][None]
        fc = (F.softmax(module(x), 1) + F.softmax(module(torch.flip(x, (-1,))), 1)) / 2
    torch.testing.assert_close(log_probs[0].exp(), fc[0], atol=1e-6, rtol=1e-5)
    # the test step scores the same posteriors
    with torch.no_grad():
        module.test_step((images, y), 0)
    right = (expected.argmax(1) == y).float().mean()
    torch.testing.assert_close(module.test_top1.compute(), right)
