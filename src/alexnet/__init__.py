"""AlexNet lab: the 2012 AlexNet paper (and VGG) reproduced with Lightning + Hydra."""

import atexit
import gc
import os
from collections.abc import Iterator
from contextlib import contextmanager

# albumentations asks PyPI for a newer version when it is imported unless this is set; set it
# here, before any submodule can import albumentations, so no run ever waits on that request.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

# At exit the interpreter tears down the ~3,700 modules that torch, Lightning and torchmetrics
# bring, running the cyclic collector over their objects again and again: ~1.5 s of CPU at the
# end of every `python -m alexnet.<entry>` (docs/tests.md). It skips frozen objects. Nothing
# here needs that last collection: files are closed by their `with` blocks and logging's own exit
# hook, and a run finishes its W&B run itself.
atexit.register(gc.freeze)


@contextmanager
def long_lived_imports() -> Iterator[None]:
    """Around an entry point's import of torch and Lightning. The millions of objects they create
    live until exit: the cyclic collections that their creation triggers find nothing (~0.5 s of
    CPU a process), and every full collection after it would scan them all again. So the
    collector is off during the import, and what the import made is frozen (`gc.freeze`: moved
    where the collector never looks) before it is back on (docs/tests.md)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()
