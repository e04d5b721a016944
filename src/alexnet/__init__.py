"""AlexNet lab: the 2012 AlexNet paper (and VGG) reproduced with Lightning + Hydra."""

import os

# albumentations asks PyPI for a newer version when it is imported unless this is set; set it
# here, before any submodule can import albumentations, so no run ever waits on that request.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
