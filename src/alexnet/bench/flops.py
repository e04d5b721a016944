"""FLOPs per image from the layer shapes, the GPU's peak, and model FLOPs utilisation (MFU).

Counted: the multiply-adds of every ``nn.Conv2d`` and ``nn.Linear`` (2 FLOPs each), the
convolution's own ``groups`` included -- the paper's two-tower convs do half the work of dense
ones, whatever ``conv_impl`` computes (a ``masked`` conv spends twice that; MFU counts the
model's FLOPs, not the implementation's). ReLU, LRN, pooling, dropout and the loss are left
out, as MFU conventionally does. A training step is the forward pass, the weight gradients (as
many FLOPs again) and the input gradients (again, except for the first layer, whose input is the
image and needs none).
"""

from __future__ import annotations

import torch
from torch import nn

from alexnet.models import build_model

# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity) from the vendors' data sheets; matched
# against torch.cuda.get_device_name() by the first key it contains, so order matters.
PEAK_BF16_TFLOPS: dict[str, float] = {
    "H100 PCIe": 756.0,
    "H100 NVL": 835.0,
    "H100": 989.0,  # SXM ("NVIDIA H100 80GB HBM3")
    "H200": 989.0,
    "GH200": 989.0,
    "B200": 2250.0,
    "A100": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
    "A10G": 70.0,
    "RTX 4090": 165.0,
}


def layer_flops(model: nn.Module, input_size: int) -> list[tuple[str, int]]:
    """(layer name, forward FLOPs for one image) of each conv/linear layer, in call order.

    Runs one forward pass on the ``meta`` device, so ``model`` must live there (see
    :func:`flops_per_image`).
    """
    counts: list[tuple[str, int]] = []
    names = {module: name for name, module in model.named_modules()}

    def hook(module, inputs, output):
        if isinstance(module, nn.Conv2d):
            per_output = (
                (module.in_channels // module.groups)
                * module.kernel_size[0]
                * (module.kernel_size[1])
            )
            counts.append((names[module], 2 * output[0].numel() * per_output))
        else:
            counts.append((names[module], 2 * module.in_features * module.out_features))

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    try:
        with torch.no_grad():
            model(torch.empty(1, 3, input_size, input_size, device="meta"))
    finally:
        for h in handles:
            h.remove()
    return counts


def flops_per_image(model_kwargs: dict) -> dict[str, float]:
    """``{"forward": F, "train": T}``: FLOPs per image of the network ``build_model`` makes
    from ``model_kwargs`` (built on the meta device: no memory, no arithmetic)."""
    kwargs = {**model_kwargs, "lrn_impl": "torch"} if "lrn_impl" in model_kwargs else model_kwargs
    with torch.device("meta"):
        model = build_model(**kwargs).eval()
    layers = layer_flops(model, model.input_size)
    forward = sum(f for _, f in layers)
    first = layers[0][1] if layers else 0
    return {"forward": float(forward), "train": float(3 * forward - first)}


def peak_flops(device: torch.device) -> float | None:
    """The dense bf16 peak in FLOP/s of a CUDA device named in the table; None otherwise."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, tflops in PEAK_BF16_TFLOPS.items():
        if key in name:
            return tflops * 1e12
    return None


def mfu(img_per_s: float, train_flops_per_image: float, peak: float | None) -> float | None:
    """Model FLOPs utilisation in [0, 1], or None without a known peak."""
    if peak is None or not img_per_s:
        return None
    return img_per_s * train_flops_per_image / peak
