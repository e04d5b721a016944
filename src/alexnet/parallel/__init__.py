"""Training on several processes: the paper's two-tower model parallelism and plain DDP.

- ``towers``: :class:`~alexnet.parallel.towers.TowerAlexNet`, one tower per rank (plain
  torch.distributed), with the grouped <-> per-tower state-dict conversions.
- ``comm``: the differentiable collectives between the towers.
- ``strategy``: ``trainer=towers`` (Lightning's ModelParallelStrategy, the towers' module).
- ``launch``: the global-batch split and the rank/multirun checks ``train.py`` runs.
- ``bench``: communication volume and step time of the towers vs the grouped net.

Submodules are imported explicitly, so the plain-torch parts load without the Lightning ones.
"""
