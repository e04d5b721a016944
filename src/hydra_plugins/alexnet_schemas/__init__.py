"""The entry configs' schemas (alexnet.config.schema) in Hydra's ConfigStore before any composition.

Hydra imports every module under `hydra_plugins` when it first looks for plugins, which it does
before it composes a config; this import registers `schema_train`, `schema_eval`, ... so that
`conf/*.yaml` compose from any caller (the entry points, `hydra.compose` in a notebook, tests).
"""

import alexnet.config.schema  # noqa: F401
