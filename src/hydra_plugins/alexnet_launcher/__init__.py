"""Hydra launcher plugin of AlexNet lab: one process per multirun job (see subprocess_launcher)."""
