"""The Lightning add-ons a training run attaches (built by ``alexnet.entry.build_callbacks`` and
``alexnet.training.tracking.build_loggers``):

- ``callbacks``: throughput, images seen, the remaining-time estimate;
- ``resume``: ``last.ckpt`` and the best checkpoint, exact resume;
- ``checkpoints``: loading checkpoints safely, and VGG's start from a trained net A;
- ``nonfinite``: the NaN/inf loss guard;
- ``tracking``: the CSV and W&B loggers and the W&B run's identity;
- ``figure_callbacks``: the paper's figures while and after training.
"""
