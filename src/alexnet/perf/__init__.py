"""Measuring speed: FLOPs and MFU, the training step in a raw loop and under Lightning, and the
input pipelines. `python -m alexnet.bench` (`make bench`) puts them together."""
