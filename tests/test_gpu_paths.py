"""The fast paths on a real GPU (skipped without CUDA): compiled fast nets against the plain
net, nvjpeg against CPU decoding, batched augmentation on CUDA against the CPU."""

import pytest
import torch

from alexnet.data.augment.batched import BatchTrain
from alexnet.data.folder import index_folder
from alexnet.data.stats import compute_stats, imagenet_default_stats
from alexnet.data.store import JpegStore, StoreLoader, write_store
from alexnet.models import AlexNet

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


def _run(model, x, g):
    model.zero_grad()
    y = model(x)
    y.backward(g)
    return y.float(), {n: p.grad.float().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("conv_impl", ["split", "masked"])
def test_compiled_fast_paper_net_matches_plain_net(conv_impl):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    kwargs = dict(num_classes=100, dropout=0.0, init="kaiming")
    ref = AlexNet(**kwargs).cuda()
    fast = AlexNet(**kwargs, conv_impl=conv_impl, lrn_impl="fused").cuda()
    fast.load_state_dict(ref.state_dict())
    fast = fast.to(memory_format=torch.channels_last)
    x = torch.randn(8, 3, 224, 224, device="cuda") * 30
    g = torch.randn(8, 100, device="cuda")
    y_ref, grads_ref = _run(ref, x, g)
    y, grads = _run(torch.compile(fast), x.contiguous(memory_format=torch.channels_last), g)
    assert (y - y_ref).abs().max() / y_ref.abs().max() < 1e-3
    for name, want in grads_ref.items():
        assert (grads[name] - want).abs().max() / want.abs().max().clamp_min(1e-12) < 1e-2, name


def test_batched_augmentation_on_cuda_equals_cpu():
    images = torch.randint(0, 256, (16, 40, 40, 3), dtype=torch.uint8)
    batch = BatchTrain(compute_stats(images.numpy()), crop=32, pad=4, lighting=0.1)
    draws = batch.draw(16, torch.Generator().manual_seed(0), "cpu")
    on_gpu = type(draws)(*(t.cuda() for t in (draws.top, draws.left, draws.flip, draws.alpha)))
    torch.testing.assert_close(batch.apply(images.cuda(), on_gpu).cpu(), batch.apply(images, draws))


def test_nvjpeg_store_loader_matches_cpu_decoding(imagenet_folder, tmp_path):
    folder = imagenet_folder / "imagenet"
    write_store(index_folder(folder / "val", ""), tmp_path, "val", workers=0)
    store = JpegStore(tmp_path, "val")
    batch = BatchTrain(imagenet_default_stats(256), crop=224, lighting=0.1)
    out = {}
    for decode in ("device", "cpu"):
        loader = StoreLoader(
            store, batch, 3, shuffle=True, drop_last=True, device="cuda", seed=5, decode=decode
        )
        out[decode] = [(x.cpu(), y.cpu()) for x, y in loader]
    for (x_gpu, y_gpu), (x_cpu, y_cpu) in zip(out["device"], out["cpu"], strict=True):
        assert torch.equal(y_gpu, y_cpu)
        # nvjpeg and libjpeg-turbo may round the inverse DCT differently: a grey level or two
        assert (x_gpu - x_cpu).abs().mean() < 2.0
