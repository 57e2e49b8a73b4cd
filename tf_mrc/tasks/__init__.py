"""Tasks: one module each, all behind tf_mrc.tasks.base.Task, found by ``get_task(name)``.

A module of this package that registers a Task subclass (``@register``) is a task: the commands list it, build
its options' flags and pass them to it without naming it anywhere else.
"""
import importlib
import pkgutil

from tf_mrc.errors import UserError
from tf_mrc.tasks.base import (DataError, FeatureSettings, Featurized, Task, TaskOption,  # noqa: F401
                               _REGISTRY, register)


def _registry():
    """Every registered task, importing each module of this package once (an import error in one surfaces)."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module("%s.%s" % (__name__, module.name))
    return _REGISTRY


def task_names():
    return sorted(_registry())


def get_task(name, options=None):
    """The task called ``name`` built with ``options`` ({option name: value})."""
    tasks = _registry()
    if name not in tasks:
        raise UserError("unknown task %r; known: %s" % (name, ", ".join(sorted(tasks))))
    return tasks[name](options)


def all_task_options():
    """Every task's declared options, one per name (tasks that share a name share its kind and choices); the
    help names the tasks that read it."""
    merged = {}
    for name in task_names():
        for option in _registry()[name].declared_options:
            merged.setdefault(option.name, []).append((name, option))
    options = []
    for option_name, readers in merged.items():
        first = readers[0][1]
        if any((option.kind, option.choices) != (first.kind, first.choices) for _, option in readers):
            raise TypeError("tasks %s declare --%s differently" % (", ".join(t for t, _ in readers), option_name))
        allowed = "; one of %s" % "|".join(first.choices) if first.choices else ""
        options.append(TaskOption(option_name, first.kind, None, "; ".join(
            "%s: %s (default: %s%s)" % (task, option.help, "none" if option.default is None else option.default,
                                        allowed) for task, option in readers), first.choices))
    return options


def task_options_from(values, task):
    """{option: value} of ``task``'s declared options among ``values`` (a name -> value mapping, None = not
    given); a value given for an option ``task`` does not read is a UserError."""
    readers = {option.name for option in _registry()[task].declared_options} if task in _registry() else set()
    chosen = {}
    for option in all_task_options():
        value = values.get(option.name)
        if value is None:
            continue
        if option.name not in readers:
            raise UserError("--%s is not an option of task %s" % (option.name, task))
        chosen[option.name] = value
    return chosen


def add_task_arguments(parser, required=True):
    """``--task`` and every task's options on an argparse ``parser`` (the commands other than run_finetune)."""
    parser.add_argument("--task", required=required, choices=task_names())
    for option in all_task_options():
        parser.add_argument("--" + option.name, type=option.kind, default=None, help=option.help)


def task_for_file(name, options, path):
    """The task for reading ``path`` as a file the user named (``tf_mrc.evaluate``, ``tf_mrc.audit``): the task
    may adapt its options to the file (a C3 file named for one subset then means that file alone)."""
    tasks = _registry()
    if name not in tasks:
        raise UserError("unknown task %r; known: %s" % (name, ", ".join(sorted(tasks))))
    return tasks[name](tasks[name].options_for_file(dict(options), path))


def task_from_arguments(args, path):
    """The task an argparse namespace built with ``add_task_arguments`` asks for, with its options, for reading
    the file ``path`` the user named."""
    return task_for_file(args.task, task_options_from(vars(args), args.task), path)
