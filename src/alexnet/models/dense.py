"""Dense evaluation of a batch of whole images of different sizes (VGG, section 3.2).

A dense-evaluation batch is a list with one entry per image: a 3xHxW tensor, or a tuple of them
(the image rescaled to several test scales Q). Images are never padded -- padding would change
what the network sees at the borders -- so images of equal size are stacked and scored together,
and every image's posterior is the mean of ``net.dense_scores`` over its scales (each of which
already averages the image and its horizontal flip).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

DenseBatch = Sequence[torch.Tensor | Sequence[torch.Tensor]]


def dense_posteriors(net: nn.Module, images: DenseBatch, flip: bool = True) -> torch.Tensor:
    """Class posteriors (N, num_classes), float32, for N whole images of any sizes.

    ``net`` needs a ``dense_scores(x, flip=...)`` method (the VGG networks); ValueError otherwise.
    Put ``net`` in eval mode first (dropout would otherwise be active).
    """
    if not hasattr(net, "dense_scores"):
        raise ValueError(
            f"aug.eval=dense needs a network with dense evaluation (model vgg or vgg_cifar); "
            f"{type(net).__name__} has none: use aug.eval=center"
        )
    if not images:
        raise ValueError("dense_posteriors got an empty batch")
    groups: dict[tuple[int, ...], list[tuple[int, torch.Tensor]]] = {}
    for i, item in enumerate(images):
        for view in (item,) if isinstance(item, torch.Tensor) else item:
            groups.setdefault(tuple(view.shape), []).append((i, view))
    total: torch.Tensor | None = None
    counts = torch.zeros(len(images))
    for members in groups.values():
        index = torch.tensor([i for i, _ in members])
        probs = net.dense_scores(torch.stack([v for _, v in members]), flip=flip).float()
        if total is None:
            total = probs.new_zeros(len(images), probs.shape[1])
        total.index_add_(0, index.to(probs.device), probs)
        counts.index_add_(0, index, torch.ones(len(members)))
    return total / counts.to(total.device)[:, None]
