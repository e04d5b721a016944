"""The Lightning side of a training run.

- ``run``: one training from a composed config (fit, test the best checkpoint, record), what
  ``python -m alexnet.train`` runs;
- ``module``: the LightningModule (loss, top-1/top-5 error, SGD and its schedule);
- ``record``: ``results.json``, the record a run leaves, with its provenance;
- ``multirun``: one job of a grid (skipped when done, resumed, never stops the grid);

and the add-ons a run attaches (built by ``alexnet.config.entry.build_callbacks`` and
``build_loggers``):

- ``callbacks``: throughput, images seen, the remaining-time estimate;
- ``resume``: ``last.ckpt`` and the best checkpoint, exact resume;
- ``checkpoints``: loading checkpoints safely, and VGG's start from a trained net A;
- ``nonfinite``: the NaN/inf loss guard;
- ``tracking``: the CSV and W&B loggers and the W&B run's identity;
- ``figure_callbacks``: the paper's figures while and after training.
"""
