"""``--init_checkpoint``: load a published (or our own) checkpoint into the graph by variable name, and say so.

A silent partial load is the classic way to fine-tune from random weights without noticing, so every run logs
which model variables came from the checkpoint, which did not (e.g. a fresh task head), and which checkpoint
variables went unused. A variable whose shape differs is an error, not a skip.
"""
import dataclasses
import re
from typing import List

from tf_mrc.compat import tf
from tf_mrc.errors import UserError

# Checkpoint entries that are training state rather than model weights: never reported as unused.
_TRAINING_STATE = re.compile(
    r"(^|/)(global_step|good_steps|loss_scale|skipped_steps|micro_step|beta1_power|beta2_power)$"
    r"|/(adam_m|adam_v|Adam|Adam_1|lamb_m|lamb_v|Momentum|Adagrad|accum[^/]*)$")
# The pretraining objectives' heads (masked LM and next-sentence / sentence-order; XLNet's LM bias and the mask
# embedding of its query stream), unused when fine-tuning.
PRETRAINING_HEAD_PREFIXES = ("cls/predictions/", "cls/seq_relationship/", "model/lm_loss/",
                             "model/transformer/mask_emb/")


def is_training_state(name):
    """Whether checkpoint entry ``name`` is optimizer or step state rather than a model weight."""
    return bool(_TRAINING_STATE.search(name))


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


def init_from_checkpoint(init_checkpoint, log=print, variables=None):
    """Initialise ``variables`` (default: the graph's trainable variables) from ``init_checkpoint`` by name.

    ``init_checkpoint`` is a checkpoint prefix or a directory (its latest checkpoint). Raises CheckpointError when
    it cannot be read or a variable's shape differs. Returns a CheckpointReport whose lines have been logged.
    """
    try:
        stored = dict(tf.train.list_variables(init_checkpoint))
    except (tf.errors.OpError, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError("init_checkpoint %s cannot be read: %s" % (init_checkpoint, reason))
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
