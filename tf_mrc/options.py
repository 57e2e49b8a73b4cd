"""Every option of a run, declared once: RunSpec's fields carry their type, default, help, group and bounds.

``run_finetune.py`` generates its absl flags from these declarations (plus every task's own options, see
``tf_mrc.tasks``), ``tf_mrc.audit`` and ``export.to_pb`` add the ones they share to their argparse parsers, and
``validate`` checks every value once, at the edge, before any work: the code behind it trusts what it gets.
Each failed check is one ``error:`` line naming the flag and the allowed range.
"""
import dataclasses
import math
from typing import Optional

from tf_mrc.errors import UserError

GROUPS = ("data", "model", "training", "memory/precision", "distributed", "output")
TASK_GROUP = "task options (each task reads its own)"
KERNELS = ("fused", "reference", "blocksparse", "auto")
PRECISIONS = ("fp32", "fp16", "bf16")
ATTENTION_DROPOUT_PLACEMENTS = ("probs", "context")


def option(default, help, group, kind, default_text=None, minimum=None, above=None, maximum=None, choices=None,
           required=False, aliases=()):
    """A RunSpec field with its command-line declaration.

    ``kind``: bool | int | float | str; ``default_text`` says in the help what a ``None`` default stands for;
    ``minimum`` / ``maximum`` are inclusive bounds, ``above`` an exclusive lower bound; ``choices`` the allowed
    values (a callable returns them, for lists that are only known at run time); ``required``: the command line
    must give it; ``aliases``: the names the reference scripts (google-research/bert, zihangdai/xlnet) give the
    same setting, accepted as well, so their users' commands work."""
    assert group in GROUPS, group
    return dataclasses.field(default=default, metadata={
        "help": help, "group": group, "kind": kind, "default_text": default_text, "minimum": minimum,
        "above": above, "maximum": maximum, "choices": choices, "required": required, "aliases": aliases})


def _model_names():
    from tf_mrc import presets
    return list(presets.MODEL_NAMES)


def _task_names():
    from tf_mrc.tasks import task_names
    return task_names()


@dataclasses.dataclass
class RunSpec:
    """One fine-tuning job: ``run_finetune.py`` builds it from flags, tests and tools build it directly."""
    # data
    task: str = option("cmrc2018", "Task.", "data", str, choices=_task_names)
    data_dir: Optional[str] = option(None, "Directory holding the task's files under their published names.",
                                     "data", str, default_text="none")
    train_file: Optional[str] = option(None, "Training file.", "data", str,
                                       default_text="DATA_DIR/<the task's train file>")
    dev_file: Optional[str] = option(None, "Evaluation file.", "data", str,
                                     default_text="DATA_DIR/<the task's dev file>")
    predict_file: Optional[str] = option(None, "File to predict.", "data", str, default_text="the dev file")
    cache_dir: Optional[str] = option(None, "Feature cache directory.", "data", str, default_text="OUTPUT_DIR/cache")
    preprocess_workers: Optional[int] = option(
        None, "Processes featurizing the data files on each rank; the cache is byte-identical for any number.",
        "data", int, minimum=1, default_text="the host's cores divided by its Horovod ranks")
    lower_case: Optional[bool] = option(None, "Lower-case input.", "data", bool,
                                        default_text="the model's convention: BERT/ALBERT yes, XLNet no",
                                        aliases=("do_lower_case",))
    max_seq_length: Optional[int] = option(None, "Tokens per window.", "data", int, minimum=1,
                                           default_text="the task's, capped by the model's")
    doc_stride: int = option(128, "Stride between passage windows, in tokens.", "data", int, minimum=1)
    max_query_length: int = option(64, "Question tokens kept.", "data", int, minimum=1)
    # model
    model: str = option("roberta_wwm_ext_base", "Model preset.", "model", str, choices=_model_names)
    init_checkpoint: Optional[str] = option(None, "Checkpoint to start from (published TF variable names).",
                                            "model", str, default_text="none: random initialisation")
    vocab_file: Optional[str] = option(None, "WordPiece vocabulary of the checkpoint.", "model", str,
                                       default_text="none")
    spm_model: Optional[str] = option(None, "SentencePiece model (XLNet).", "model", str, default_text="none",
                                      aliases=("spiece_model_file",))
    config_file: Optional[str] = option(None, "The checkpoint's BERT/ALBERT/XLNet JSON config; overrides the preset.",
                                        "model", str, default_text="the preset's",
                                        aliases=("bert_config_file", "model_config_path"))
    # training
    do_train: bool = option(False, "Train.", "training", bool)
    seeds: int = option(1, "Run this many seeds (seed, seed+1, ...) and write results.md (mean and max).",
                        "training", int, minimum=1)
    seed: int = option(12345, "First random seed.", "training", int, minimum=0)
    num_train_epochs: Optional[float] = option(None, "Epochs (passes over the training features).", "training",
                                               float, above=0, default_text="the preset's for this task")
    train_batch_size: Optional[int] = option(
        None, "Global batch in features per optimizer step, over all workers and accumulated micro-batches; each "
        "rank's micro-batch is this / (workers x --grad_accum_steps).", "training", int, minimum=1,
        default_text="the preset's, e.g. 32")
    learning_rate: Optional[float] = option(None, "Peak learning rate.", "training", float, above=0,
                                            default_text="the preset's")
    warmup_proportion: Optional[float] = option(None, "Share of steps with linear warmup (0..1).", "training",
                                                float, minimum=0, maximum=1, default_text="the preset's")
    max_train_steps: Optional[int] = option(None, "Stop after this many optimizer steps (overrides epochs).",
                                            "training", int, minimum=1, default_text="from the epochs")
    weight_decay: Optional[float] = option(None, "AdamW decoupled weight decay rate per step, x learning rate.",
                                           "training", float, minimum=0, default_text="the preset's, 0.01")
    # memory/precision
    kernels: str = option("fused", "GELU/softmax kernels: fused saves activation memory, reference is plain TF.",
                          "memory/precision", str, choices=KERNELS)
    precision: str = option("fp32", "Encoder compute dtype; variables stay fp32. fp16 adds dynamic loss scaling "
                            "and skips steps whose gradients overflow.", "memory/precision", str, choices=PRECISIONS)
    loss_scale_growth_interval: int = option(2000, "fp16: overflow-free steps before the loss scale doubles.",
                                             "memory/precision", int, minimum=1)
    grad_accum_steps: Optional[int] = option(
        None, "Micro-batches accumulated per optimizer step, a split of the global --train_batch_size that saves "
        "memory; steps and the LR schedule count optimizer steps.", "memory/precision", int, minimum=1,
        default_text="the preset's: 1; C3: 4")
    recompute: bool = option(False, "Gradient checkpointing: keep only each transformer block's input and "
                             "recompute the block in the backward pass (bert/albert layouts).",
                             "memory/precision", bool)
    attention_dropout_placement: str = option(
        "probs", "Attention dropout on the probabilities (BERT's) or on the merged context (smaller mask).",
        "memory/precision", str, choices=ATTENTION_DROPOUT_PLACEMENTS)
    xla: bool = option(False, "XLA JIT auto-clustering (best effort; on CPU also set "
                       "TF_XLA_FLAGS=--tf_xla_cpu_global_jit).", "memory/precision", bool)
    # distributed
    lr_scale_with_workers: bool = option(False, "Multiply the learning rate by the number of Horovod workers.",
                                         "distributed", bool)
    fp16_allreduce: bool = option(False, "Compress gradients to fp16 for the Horovod allreduce.", "distributed",
                                  bool)
    # output
    output_dir: Optional[str] = option(None, "Checkpoints, predictions and results go here.", "output", str,
                                       default_text="required", required=True)
    do_eval: bool = option(False, "Predict the dev file and score it with the task's official metric.", "output",
                           bool)
    do_predict: bool = option(False, "Write predictions.json for the predict file.", "output", bool)
    predict_batch_size: int = option(32, "Features per prediction batch.", "output", int, minimum=1)
    max_answer_length: int = option(50, "Longest answer, in tokens.", "output", int, minimum=1)
    n_best_size: int = option(20, "Candidates kept per question.", "output", int, minimum=1)
    save_checkpoints_steps: int = option(1000, "Optimizer steps between checkpoints; training resumes from the "
                                         "last one.", "output", int, minimum=1)
    keep_checkpoint_max: int = option(3, "Checkpoints kept.", "output", int, minimum=1)
    log_every: int = option(50, "Optimizer steps between progress lines.", "output", int, minimum=1)
    eval_every_epochs: float = option(0.5, "With --do_train --do_eval: epochs between dev evaluations; the best "
                                      "checkpoint is kept in OUTPUT_DIR/best; 0: only after training.", "output",
                                      float, minimum=0)
    task_options: dict = dataclasses.field(default_factory=dict)   # the task's own options (tf_mrc.tasks)


def declared(cls=RunSpec):
    """The fields of ``cls`` that carry a command-line declaration, in declaration order."""
    return [f for f in dataclasses.fields(cls) if "kind" in f.metadata]


def choices_of(field):
    choices = field.metadata["choices"]
    return list(choices() if callable(choices) else choices) if choices is not None else None


def help_text(help, default, kind, default_text=None, choices=None):
    """The help line of an option: what it does, its allowed values and its default."""
    if default is None:
        shown = default_text or "none"
    elif kind is bool:
        shown = "true" if default else "false"
    else:
        shown = str(default)
    allowed = "; one of %s" % "|".join(str(c) for c in choices) if choices else ""
    return "%s (default: %s%s)" % (help, shown, allowed)


def field_help(field):
    m = field.metadata
    text = help_text(m["help"], field.default, m["kind"], m["default_text"], choices_of(field))
    return text + (" Also --%s." % ", --".join(m["aliases"]) if m["aliases"] else "")


def allowed_range(field):
    """The allowed values of a numeric field in words, e.g. 'an integer >= 1'."""
    m = field.metadata
    parts = []
    if m["above"] is not None:
        parts.append("> %s" % m["above"])
    if m["minimum"] is not None:
        parts.append(">= %s" % m["minimum"])
    if m["maximum"] is not None:
        parts.append("<= %s" % m["maximum"])
    noun = "an integer" if m["kind"] is int else "a number"
    return "%s %s" % (noun, " and ".join(parts)) if parts else noun


def check_value(name, value, field):
    """One declared value against its type, bounds and choices; raises UserError naming --``name``."""
    m = field.metadata
    if value is None:
        if m["required"]:
            raise UserError("--%s is required" % name)
        return
    kind = m["kind"]
    if kind in (int, float):
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        finite = not isinstance(value, float) or math.isfinite(value)   # NaN and inf are no counts or rates
        if not numeric or (kind is int and not isinstance(value, int)) or not finite:
            raise UserError("--%s must be %s, got %r" % (name, allowed_range(field), value))
        if ((m["above"] is not None and not value > m["above"]) or
                (m["minimum"] is not None and value < m["minimum"]) or
                (m["maximum"] is not None and value > m["maximum"])):
            raise UserError("--%s must be %s, got %r" % (name, allowed_range(field), value))
    choices = choices_of(field)
    if choices is not None and value not in choices:
        raise UserError("--%s must be one of %s, got %r" % (name, "|".join(choices), value))


def validate(spec):
    """Every declared field of ``spec`` against its declaration, and what needs two of them together."""
    for field in declared(type(spec)):
        check_value(field.name, getattr(spec, field.name), field)


def validate_for_model(spec, task, config, tokenizer, settings):
    """The checks that need the resolved task and model: precision and recompute support, the position
    embeddings, the window settings against the task's inputs."""
    from tf_mrc.modeling.layouts import check_max_seq_length, check_recompute
    check_precision(spec.precision)
    if spec.recompute:
        check_recompute(config)
    check_max_seq_length(config, settings.max_seq_length)
    task.check_settings(settings, tokenizer)


def check_precision(precision):
    """bf16 compute needs TF 2 (TF 1.13 has no bfloat16 batch-matmul kernel)."""
    from tf_mrc.compat import IS_TF1
    if precision == "bf16" and IS_TF1:
        raise UserError("--precision=bf16 needs TF 2 (TF 1.13 has no bfloat16 batch-matmul kernel); use fp16")


# -- command lines ------------------------------------------------------------------------------------------------

def define_absl_flags(flags, flag_values=None):
    """One absl flag per declared RunSpec field and per task option, with the declared name, default and help.
    Choices are listed in the help and checked by ``validate`` (a one-line error, like every other value)."""
    from tf_mrc.tasks import all_task_options
    definers = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer, float: flags.DEFINE_float,
                str: flags.DEFINE_string}
    where = {} if flag_values is None else {"flag_values": flag_values}
    for field in declared():
        definers[field.metadata["kind"]](field.name, field.default, field_help(field), **where)
        for alias in field.metadata["aliases"]:
            flags.DEFINE_alias(alias, field.name, **where)
    for task_option in all_task_options():
        definers[task_option.kind](task_option.name, None, task_option.help, **where)


def grouped_help(flag_values, doc):
    """``--help`` of run_finetune.py: the usage, then every flag under its group, with default and unit."""
    from tf_mrc.tasks import all_task_options
    groups = {group: [] for group in GROUPS + (TASK_GROUP,)}
    for field in declared():
        groups[field.metadata["group"]].append(field.name)
    groups[TASK_GROUP] = [task_option.name for task_option in all_task_options()]
    lines = [doc.strip(), ""]
    for group, names in groups.items():
        lines.append("%s:" % group)
        for name in names:
            flag = flag_values[name]
            lines.append("  --%s: %s" % (name, flag.help))
        lines.append("")
    lines.append("All flags, absl's included: --helpfull")
    return "\n".join(lines)


def add_arguments(parser, names, defaults=True):
    """Add the declared RunSpec fields ``names`` to an argparse ``parser`` (same name, type, default, help);
    ``defaults=False``: an option not given is None (the help still says the default)."""
    fields = {field.name: field for field in declared()}
    for name in names:
        field = fields[name]
        kind = field.metadata["kind"]
        default = field.default if defaults else None
        names = [name] + list(field.metadata["aliases"])
        if kind is bool:
            parser.add_argument(*["--" + n for n in names], dest=name, action="store_true", default=default,
                                help=field_help(field))
            parser.add_argument(*["--no" + n for n in names], dest=name, action="store_false")
        else:
            parser.add_argument(*["--" + n for n in names], dest=name, type=kind, default=default,
                                choices=choices_of(field), help=field_help(field))


def check_arguments(args, names):
    """Validate the argparse values of the declared RunSpec fields ``names`` like ``validate`` does."""
    fields = {field.name: field for field in declared()}
    for name in names:
        check_value(name, getattr(args, name), fields[name])
