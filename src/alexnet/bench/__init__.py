"""Every benchmark, one timer (``timer``): ``python -m alexnet.bench`` (``make bench``, sections in
``__main__``) and ``python -m alexnet.bench.towers`` (``make bench-towers``).

- ``__main__``: the Hydra entry -- training step per model variant, raw loop vs Lightning, LRN,
  input pipelines, the CPU's own workload; prints tables, writes ``bench.json``;
- ``loops``: the training step in a raw loop, under Lightning, and the naive baseline;
- ``flops``: FLOPs per image and MFU;
- ``inputs``: images per second delivered by each input pipeline;
- ``lrn``: the LRN layer's implementations, forward + backward;
- ``towers``: the two towers' traffic per step, and a towers vs grouped step on CPU processes.

Nothing here asserts a speed: benchmarks print figures.
"""
