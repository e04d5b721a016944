"""The augmentation stacks, one formula each:

- ``presets``: the paper's (section 4.1) and CIFAR presets as albumentations pipelines, one image
  at a time in DataLoader workers, and the ``aug`` group's choices (``PaperAug``, ``CifarAug``,
  ``PlainAug``; ``VGGAug`` in ``vgg``), each of which builds a (train, eval) pair;
- ``batched``: the same presets as batched tensor ops on the training device (the fast loaders);
- ``vgg``: VGG's training scale, crops and dense / multi-crop evaluation.

The PCA lighting formula all three apply is ``alexnet.data.stats.lighting_offset``.
"""
