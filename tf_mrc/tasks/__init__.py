"""Tasks: one module each, all behind tf_mrc.tasks.base.Task. ``get_task(name)`` finds them."""
from tf_mrc.tasks.base import DataError, FeatureSettings, Featurized, Task, get_task  # noqa: F401


def task_for_file(name, options, path):
    """The task for reading ``path`` as a file the user named (``tf_mrc.evaluate``, ``tf_mrc.audit``): it reads
    that file alone. A C3 file whose name gives its subset (c3-d-dev.json) would otherwise stand for its split of
    every subset; the option ``c3_subsets`` asks for that explicitly."""
    options = dict(options)
    if name == "c3" and not options.get("c3_subsets"):
        from tf_mrc.tasks.c3 import subset_named
        if subset_named(path):
            options["c3_subsets"] = subset_named(path)
    return get_task(name, options)
