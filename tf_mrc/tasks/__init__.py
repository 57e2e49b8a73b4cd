"""Tasks: one module each, all behind tf_mrc.tasks.base.Task. ``get_task(name)`` finds them."""
from tf_mrc.tasks.base import DataError, FeatureSettings, Featurized, Task, get_task  # noqa: F401
