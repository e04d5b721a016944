"""From a composed Hydra config to a run: the schemas Hydra checks keys and types against
(``schema``), the preflight that dry-builds what a run will build (``validate``), the `auto`
settings resolved for the machine (``hardware``), and what every entry point shares (``entry``:
the config directory, one-line user errors, the builders).
"""
