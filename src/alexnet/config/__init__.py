"""From a composed Hydra config to a run: the schemas Hydra checks keys and types against
(``schema``), the preflight that dry-builds what a run will build (``validate``), the log dir
checked before Hydra makes a run dir in it (``log_dir``), the `auto` settings resolved for the
machine (``hardware``), and what every entry point shares (``entry``: one-line user errors, the
builders). The config directory and `ConfigError` are here, importable without torch.
"""

from pathlib import Path

# Found through the package (alexnet/conf links to the top-level conf/), so an installed wheel runs.
CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")


class ConfigError(ValueError):
    """A config value that cannot work; the message is one line: key, value, problem, fix."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))
