"""AlexNet lab: the 2012 AlexNet paper (and VGG) reproduced with Lightning + Hydra."""
