"""``--init_checkpoint``: load a published (or our own) checkpoint into the graph by variable name, and say so.

A silent partial load is the classic way to fine-tune from random weights without noticing, so every run logs
which model variables came from the checkpoint, which did not (e.g. a fresh task head), and which checkpoint
variables went unused. A variable whose shape differs is an error, not a skip, and so is a checkpoint that
lacks any encoder variable: only the parts fine-tuning adds (FRESH_PREFIXES) may start from initializers.
"""
import dataclasses
import os
import re
from typing import List

from tf_mrc.compat import tf
from tf_mrc.errors import UserError, first_line

# Checkpoint entries that are training state rather than model weights: never reported as unused.
_TRAINING_STATE = re.compile(
    r"(^|/)(global_step|good_steps|loss_scale|skipped_steps|micro_step|beta1_power|beta2_power)$"
    r"|/(adam_m|adam_v|Adam|Adam_1|lamb_m|lamb_v|Momentum|Adagrad|accum[^/]*)$")
# The pretraining objectives' heads (masked LM and next-sentence / sentence-order; XLNet's LM bias and the mask
# embedding of its query stream), unused when fine-tuning.
PRETRAINING_HEAD_PREFIXES = ("cls/predictions/", "cls/seq_relationship/", "model/lm_loss/",
                             "model/transformer/mask_emb/")


# Model variables a pre-trained checkpoint may lack: the task heads, BERT's pooler and XLNet's sequence summary
# (weights converted from a model without them leave them out; fine-tuning starts them from their initializers).
FRESH_PREFIXES = ("cls/", "bert/pooler/", "model/sequnece_summary/")


def is_training_state(name):
    """Whether checkpoint entry ``name`` is optimizer or step state rather than a model weight."""
    return bool(_TRAINING_STATE.search(name))


_LAYER_INDEX = re.compile(r"(^|/)layer_\d+/")


def surplus_layers(stored, model_names):
    """The entries of checkpoint ``stored`` (names) that are weights of layers the model (variables
    ``model_names``) does not have: e.g. bert/encoder/layer_11/... when the config says 6 layers. A model built
    from such a checkpoint silently computes something else than the checkpoint was trained to."""
    def pattern(name):
        return _LAYER_INDEX.sub(r"\1layer_N/", name)
    wanted = set(model_names)
    layered = {pattern(name) for name in wanted if _LAYER_INDEX.search(name)}
    return sorted(name for name in stored if name not in wanted and not is_training_state(name)
                  and _LAYER_INDEX.search(name) and pattern(name) in layered)


class CheckpointError(UserError):
    """The checkpoint cannot initialise this model; the message is one line for the user."""


@dataclasses.dataclass
class CheckpointReport:
    checkpoint: str
    loaded: List[str]
    missing: List[str]           # model variables left at their initializers
    unused: List[str]            # checkpoint variables nothing in the model asked for
    pretraining_heads: List[str]  # unused entries under PRETRAINING_HEAD_PREFIXES

    def lines(self):
        total = len(self.loaded) + len(self.missing)
        out = ["init_checkpoint %s: loaded %d of %d model variables" % (self.checkpoint, len(self.loaded), total)]
        out += ["  NOT in checkpoint, left at initializer: %s" % name for name in self.missing]
        out += ["  unused checkpoint variable: %s" % name for name in self.unused]
        if self.pretraining_heads:
            scopes = sorted({prefix.rstrip("/") for prefix in PRETRAINING_HEAD_PREFIXES
                             for name in self.pretraining_heads if name.startswith(prefix)})
            out.append("  unused (pretraining heads): %d variables under %s"
                       % (len(self.pretraining_heads), ", ".join(scopes)))
        return out


def variable_name(variable):
    """A variable's checkpoint name: its graph name without the ``:0`` output suffix."""
    return re.sub(r":\d+$", "", variable.name)


def checkpoint_in_directory(directory):
    """The checkpoint prefix ``directory`` holds: the latest its ``checkpoint`` state file names, else its only
    checkpoint (a published release, e.g. google's chinese_L-12_H-768_A-12/bert_model.ckpt.*, has no state
    file); None when it holds none; a UserError when it holds several and no state file says which."""
    latest = tf.train.latest_checkpoint(directory)
    if latest:
        return latest
    prefixes = sorted(name[:-len(".index")] for name in os.listdir(directory) if name.endswith(".index"))
    if len(prefixes) > 1:
        raise UserError("%s holds %d checkpoints (%s) and no 'checkpoint' file naming the latest: pass one of them"
                        % (directory, len(prefixes), ", ".join(prefixes)))
    return os.path.join(directory, prefixes[0]) if prefixes else None


def resolve_checkpoint(path):
    """A checkpoint prefix for ``path``: itself, or the checkpoint in it when it is a directory."""
    return (checkpoint_in_directory(path) or path) if path and os.path.isdir(path) else path


def verify_readable(checkpoint):
    """Read every tensor of ``checkpoint`` once (the reader checks each one's CRC), so a truncated or corrupted
    .data file is a one-line CheckpointError here instead of a traceback when a session restores it."""
    try:
        reader = tf.train.load_checkpoint(checkpoint)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except Exception as err:  # OpErrors, or the IndexError / ValueError py_checkpoint_reader turns them into
        raise CheckpointError("checkpoint %s cannot be read (truncated or corrupted?): %s"
                              % (checkpoint, first_line(err)))


def init_from_checkpoint(init_checkpoint, log=print, variables=None):
    """Initialise ``variables`` (default: the graph's trainable variables) from ``init_checkpoint`` by name.

    ``init_checkpoint`` is a checkpoint prefix or a directory (its latest checkpoint). Raises CheckpointError when
    it cannot be read or a variable's shape differs. Returns a CheckpointReport whose lines have been logged.
    """
    try:
        stored = dict(tf.train.list_variables(init_checkpoint))
    except (tf.errors.OpError, ValueError) as err:
        raise CheckpointError("init_checkpoint %s cannot be read: %s" % (init_checkpoint, first_line(err)))
    if variables is None:
        variables = tf.trainable_variables()

    assignment_map, loaded, missing, mismatches = {}, [], [], []
    for variable in variables:
        name = variable_name(variable)
        if name not in stored:
            missing.append(name)
            continue
        model_shape = variable.shape.as_list()
        if list(stored[name]) != model_shape:
            mismatches.append("%s has shape %s in the model but %s in the checkpoint"
                              % (name, model_shape, list(stored[name])))
            continue
        assignment_map[name] = name
        loaded.append(name)
    if mismatches:
        more = " (and %d more shape mismatches)" % (len(mismatches) - 1) if len(mismatches) > 1 else ""
        raise CheckpointError("init_checkpoint %s: %s%s" % (init_checkpoint, mismatches[0], more))
    encoder = [name for name in loaded + missing if not name.startswith(FRESH_PREFIXES)]
    lacking = [name for name in missing if not name.startswith(FRESH_PREFIXES)]
    if lacking:
        found = "none" if len(lacking) == len(encoder) else "only %d" % (len(encoder) - len(lacking))
        raise CheckpointError("init_checkpoint %s holds %s of the model's %d encoder variables: expected e.g. %s "
                              "(it holds e.g. %s; a checkpoint of another model or layout?)"
                              % (init_checkpoint, found, len(encoder), ", ".join(lacking[:2]),
                                 ", ".join(sorted(stored)[:2]) or "nothing"))

    unused, heads = [], []
    for name in sorted(stored):
        if name in assignment_map or is_training_state(name):
            continue
        (heads if name.startswith(PRETRAINING_HEAD_PREFIXES) else unused).append(name)

    if assignment_map:
        tf.train.init_from_checkpoint(init_checkpoint, assignment_map)
    report = CheckpointReport(checkpoint=init_checkpoint, loaded=loaded, missing=missing, unused=unused,
                              pretraining_heads=heads)
    for line in report.lines():
        log(line)
    return report
