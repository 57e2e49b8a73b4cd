"""A checkpoint -> a frozen inference GraphDef of standard TF ops, its JSON sidecar, optionally a SavedModel.

    python -m export.to_pb --output_dir RUN_DIR --output model.pb [--saved_model DIR]
    python -m export.to_pb --checkpoint CKPT --config CONFIG.json --layout bert|albert|xlnet --task TASK \
        --max_seq_length N (--vocab_file VOCAB | --spm_model SPIECE) --output model.pb [--saved_model DIR]

``--output_dir`` is a finished ``run_finetune.py`` run: its run_config.json supplies the config, task, window
settings and vocabulary; the weights are its best checkpoint (OUTPUT_DIR/best/, kept by the dev evaluation during
training), or its latest one when it has no best/ or with ``--last``.

The graph's interface (tensor names are these names + ":0"; int32 inputs, batch dimension dynamic, T fixed):
    inputs   input_ids, input_mask, segment_ids   [batch, T]     span tasks (cmrc2018, drcd, cjrc)
             input_ids, input_mask, segment_ids   [batch, C, T]  choice tasks (chid, c3), C fixed
             choice_mask                          [batch, C]     choice tasks: 1 = real choice
    outputs  start_logits, end_logits             [batch, T]     span tasks, bert / albert layouts
             start_top_log_probs, start_top_index [batch, 5]     span tasks, xlnet layout (XLNet's beam head:
             end_top_log_probs, end_top_index     [batch, 25]      entry 5 i + j is the j-th end of start i)
             cls_logits                           [batch]        xlnet: the window holds no answer
             class_logits                         [batch, 4]     cjrc: span | yes | no | unknown
             choice_logits                        [batch, C]     choice tasks
``model.pb.json`` beside the graph records this interface, the task, layout, window settings, lower_case (null:
the layout's convention) and the vocabulary (WordPiece vocab.txt, or XLNet's SentencePiece model; copied beside
the graph), so a client tokenizes and lays out inputs as training did (XLNet: ``A <sep> B <sep> <cls>``, left
padding; span windows ``passage <sep> question <sep> <cls>``). tf_mrc.tasks' postprocess decodes either
output form. The graph is built with the reference kernels whatever ``--kernels`` trained the model, so it holds no
custom op; export fails if one slips in. It loads with plain TensorFlow of the version that exported it or later:
graphs hold that version's forms of core ops (TF 2.x writes AddV2, BatchMatMulV2 and, for XLNet's einsums, Einsum;
TF 1.13 lowers tf.einsum to MatMul/Transpose/Reshape when the graph is built).
(One more placeholder, ``layer_norm_epsilon``, has a default and is never fed: see shield_layer_norm_epsilon.)
"""
import argparse
import dataclasses
import json
import os
import shutil

import numpy as np

from tf_mrc import outputs
from tf_mrc.errors import UserError, one_line_errors
from tf_mrc.modeling.layouts import LAYOUTS
from tf_mrc.restart import RUN_CONFIG
from export.mapping import ConversionError, variant_of

FORMAT = "tf_mrc-frozen-graph-1"
INPUT_NAMES = ("input_ids", "input_mask", "segment_ids")
SIDECAR_SUFFIX = ".json"
EPSILON_NODE = "layer_norm_epsilon"  # see shield_layer_norm_epsilon: not an input, never fed


@dataclasses.dataclass
class ExportSpec:
    """Everything the graph and its sidecar depend on."""
    checkpoint: str
    config: object                      # tf_mrc.modeling.config.ModelConfig
    task: str
    feature_settings: dict              # tf_mrc.tasks.FeatureSettings fields
    vocab_file: str = None
    spm_model: str = None
    lower_case: bool = None             # None: the layout's convention (tokenization.load_tokenizer)
    task_options: dict = dataclasses.field(default_factory=dict)
    trained_kernels: str = None
    precision: str = "fp32"             # the encoder's compute precision in the graph: fp32 | bf16


def spec_from_run(output_dir, last=False, log=print):
    """The ExportSpec of a finished run: run_config.json (in the run or, for seed_K runs, its parent) and the
    checkpoint in its best/ (the best dev score during training), else (or with ``last``) its latest one."""
    from tf_mrc.compat import tf
    from tf_mrc.modeling.config import model_config
    candidates = [os.path.join(output_dir, RUN_CONFIG), os.path.join(os.path.dirname(os.path.abspath(output_dir)),
                                                                       RUN_CONFIG)]
    found = [path for path in candidates if os.path.isfile(path)]
    if not found:
        raise UserError("%s has no %s: pass a run_finetune.py --output_dir, or --checkpoint/--config/--task/"
                        "--max_seq_length" % (output_dir, RUN_CONFIG))
    with open(found[0], encoding="utf-8") as f:
        run = json.load(f)
    best = None if last else tf.train.latest_checkpoint(os.path.join(output_dir, "best"))
    checkpoint = best or tf.train.latest_checkpoint(output_dir)
    if checkpoint is not None:
        log("exporting %s (%s)" % (checkpoint, "the best dev score during training" if best else "the latest"))
    if checkpoint is None:
        hint = " (runs with --seeds keep theirs in seed_K/: pass --output_dir %s/seed_0)" % output_dir \
            if run.get("seeds", 1) > 1 else ""
        raise UserError("no checkpoint in %s%s" % (output_dir, hint))
    return ExportSpec(checkpoint=checkpoint, config=model_config(**run["model_config"]), task=run["task"],
                      feature_settings=run["feature_settings"], vocab_file=run.get("vocab_file"),
                      spm_model=run.get("spm_model"), lower_case=run.get("lower_case"),
                      task_options=run.get("task_options") or {}, trained_kernels=run.get("kernels"))


def build_inference_graph(config, head, max_seq_length, num_choices=None, precision="fp32"):
    """Placeholders -> encoder (reference kernels, no dropout, computing in ``precision``) -> head, in the current
    graph; inputs and outputs are the same dtypes whatever the precision. Returns ({input name: placeholder},
    {output name: tensor named so})."""
    from tf_mrc import training
    from tf_mrc.compat import tf
    from tf_mrc.modeling import build_encoder
    from tf_mrc.modeling.heads import build_head
    from tf_mrc.modeling.layouts import descriptor
    shape = [None, num_choices, max_seq_length] if head == "choice" else [None, max_seq_length]
    inputs = {name: tf.placeholder(tf.int32, shape, name=name) for name in INPUT_NAMES}
    flat = {name: tf.reshape(inputs[name], [-1, max_seq_length]) for name in INPUT_NAMES}
    features = dict(flat)  # XLNet's span head reads where the passage and <cls> are from the segment ids
    if head == "choice":
        inputs["choice_mask"] = features["choice_mask"] = tf.placeholder(tf.int32, [None, num_choices],
                                                                         name="choice_mask")
    encoder_output = build_encoder(config, flat["input_ids"], flat["input_mask"], flat["segment_ids"],
                                   is_training=False, kernels="reference",
                                   compute_dtype=training.compute_dtype(precision))
    outputs, _ = build_head(head, encoder_output, features, num_choices, config.initializer_range, with_loss=False,
                            span_head=descriptor(config).span_head)
    return inputs, {name: tf.identity(tensor, name=name) for name, tensor in outputs.items()}


def core_op_types():
    """The op types every TensorFlow build registers (custom libraries' ops are not among them)."""
    import tensorflow
    raw_ops = getattr(tensorflow, "raw_ops", None)
    if raw_ops is not None:
        return {name for name in dir(raw_ops) if not name.startswith("_")}
    from tensorflow.python.framework import op_def_registry  # TF 1.x: no raw_ops namespace
    return set(op_def_registry.get_registered_ops())


def custom_op_types(graph_def):
    """Op types in ``graph_def`` that a plain TensorFlow does not have, sorted."""
    core = core_op_types()
    return sorted({node.op for node in graph_def.node if node.op not in core})


def shield_layer_norm_epsilon(graph_def, output_names):
    """Feed every LayerNorm's epsilon from one PlaceholderWithDefault instead of a constant.

    TF 2.x with oneDNN (on by default on CPUs with AVX-512) rewrites the moments/batch_normalization LayerNorm
    into _MklLayerNorm when gamma, beta and epsilon are all constants - as freezing makes them - and that fused
    op ignores the graph's epsilon (it uses 1e-3, not 1e-12), so the logits move. A non-constant epsilon keeps
    the pattern from matching, and the graph computes the same function on every TensorFlow."""
    from tf_mrc.compat import tf
    from tf_mrc.modeling.config import LAYER_NORM_EPSILON
    constants = {node.name: node for node in graph_def.node if node.op == "Const"}
    shielded = 0
    for node in graph_def.node:
        if node.op not in ("Add", "AddV2") or not node.name.endswith("batchnorm/add"):
            continue
        for index, name in enumerate(node.input):
            value = tf.make_ndarray(constants[name].attr["value"].tensor) if name in constants else None
            if value is not None and value.shape == () and value == np.float32(LAYER_NORM_EPSILON):
                node.input[index] = EPSILON_NODE
                shielded += 1
    if not shielded:
        return graph_def
    with tf.Graph().as_default() as graph:
        tf.placeholder_with_default(np.float32(LAYER_NORM_EPSILON), [], name=EPSILON_NODE)
    graph_def.node.extend(graph.as_graph_def().node)
    return tf.graph_util.extract_sub_graph(graph_def, output_names)


def freeze(spec, head, num_choices=None):
    """(frozen GraphDef, input names, output names) for ``spec``'s checkpoint."""
    from tf_mrc.compat import tf
    from tf_mrc.modeling.checkpoint import surplus_layers, verify_readable
    from tf_mrc.modeling.layouts import check_max_seq_length
    max_seq_length = spec.feature_settings["max_seq_length"]
    check_max_seq_length(spec.config, max_seq_length)
    verify_readable(spec.checkpoint)
    stored = dict(tf.train.list_variables(spec.checkpoint))
    graph = tf.Graph()
    with graph.as_default():
        inputs, outputs = build_inference_graph(spec.config, head, max_seq_length, num_choices, spec.precision)
        output_names = sorted(outputs)
        used = {node.name for node in tf.graph_util.extract_sub_graph(graph.as_graph_def(), output_names).node}
        needed = {v.op.name: v for v in tf.global_variables() if v.op.name in used}
        missing = sorted(name for name in needed if name not in stored)
        wrong = sorted("%s %s (model wants %s)" % (name, stored[name], v.shape.as_list())
                       for name, v in needed.items() if name in stored and list(stored[name]) != v.shape.as_list())
        surplus = surplus_layers(stored, needed)
        if missing or wrong or surplus:
            raise ConversionError("checkpoint %s does not fit the %s model: %s" % (
                spec.checkpoint, spec.config.layout, "; ".join(
                    (["missing: " + ", ".join(missing[:8])] if missing else []) +
                    (["wrong shape: " + ", ".join(wrong[:4])] if wrong else []) +
                    (["layers the model lacks (num_hidden_layers %d): %s" % (
                        spec.config.num_hidden_layers, ", ".join(surplus[:4]))] if surplus else []))))
        saver = tf.train.Saver(var_list=needed)
        with tf.Session(graph=graph) as sess:
            saver.restore(sess, spec.checkpoint)
            frozen = tf.graph_util.convert_variables_to_constants(sess, graph.as_graph_def(), output_names)
    frozen = shield_layer_norm_epsilon(frozen, output_names)
    custom = custom_op_types(frozen)
    if custom:
        raise ConversionError("the exported graph holds op types a plain TensorFlow lacks: %s" % ", ".join(custom))
    return frozen, sorted(inputs), output_names


def write_saved_model(graph_def, export_dir, input_names, output_names):
    """A SavedModel of the frozen graph with one ``serving_default`` signature (for TF Serving)."""
    from tf_mrc.compat import tf
    if os.path.exists(export_dir):
        raise UserError("--saved_model %s already exists (SavedModel directories are written once)" % export_dir)
    # Built beside it and renamed into place when complete: a killed export leaves no half SavedModel under the
    # name (which the same command would then refuse as existing, and a server might load); a rerun clears it.
    staging = export_dir.rstrip(os.sep) + ".partial"
    shutil.rmtree(staging, ignore_errors=True)
    with tf.Graph().as_default() as graph:
        tf.import_graph_def(graph_def, name="")
        signature = tf.saved_model.signature_def_utils.predict_signature_def(
            inputs={name: graph.get_tensor_by_name(name + ":0") for name in input_names},
            outputs={name: graph.get_tensor_by_name(name + ":0") for name in output_names})
        with tf.Session(graph=graph) as sess:
            builder = tf.saved_model.builder.SavedModelBuilder(staging)
            builder.add_meta_graph_and_variables(sess, [tf.saved_model.tag_constants.SERVING],
                                                 signature_def_map={"serving_default": signature},
                                                 strip_default_attrs=True)
            builder.save()
    os.rename(staging, export_dir)


def _tensor_info(graph_def, names):
    """{name: {"tensor", "dtype", "shape"}} with -1 for the dynamic batch dimension."""
    from tf_mrc.compat import tf
    with tf.Graph().as_default() as graph:
        tf.import_graph_def(graph_def, name="")
        info = {}
        for name in names:
            tensor = graph.get_tensor_by_name(name + ":0")
            info[name] = {"tensor": tensor.name, "dtype": tensor.dtype.name,
                          "shape": [-1 if d is None else d for d in tensor.shape.as_list()]}
    return info


def export(spec, output, saved_model=None, log=print):
    """Write the frozen graph ``output``, ``output``.json and the vocabulary beside it; returns the sidecar dict."""
    import tensorflow
    from tf_mrc.tasks import get_task
    from tf_mrc.modeling.layouts import descriptor
    from tf_mrc.tokenization import load_tokenizer
    directory = os.path.dirname(os.path.abspath(output))
    outputs.make_writable_directory(directory, "the directory of --output %s" % output)
    task = get_task(spec.task, spec.task_options)
    vocabulary = getattr(spec, descriptor(spec.config).vocabulary_flag)
    tokenizer = load_tokenizer(spec.config.layout, spec.vocab_file, spec.spm_model, spec.lower_case) \
        if vocabulary else None  # without one, clients tokenize themselves (the demo needs one)
    if tokenizer is not None and tokenizer.vocab_size != spec.config.vocab_size:
        raise UserError("%s has %d entries but the model's vocab_size is %d" % (
            vocabulary, tokenizer.vocab_size, spec.config.vocab_size))
    num_choices = getattr(task, "num_choices", None) if task.head == "choice" else None
    graph_def, input_names, output_names = freeze(spec, task.head, num_choices)
    if os.path.exists(output + SIDECAR_SUFFIX):   # written last: it never describes a graph it was not written for
        os.remove(output + SIDECAR_SUFFIX)
    outputs.write_bytes(output, graph_def.SerializeToString())
    stem = os.path.splitext(os.path.basename(output))[0]
    copied = {}
    for key in ("vocab_file", "spm_model"):
        source = getattr(spec, key)
        if source:
            if not os.path.isfile(source):
                raise UserError("%s not found: %s" % (key, source))
            copied[key] = "%s.%s" % (stem, os.path.basename(source))
            outputs.copy_file(source, os.path.join(directory, copied[key]))
    sidecar = {
        "format": FORMAT, "graph": os.path.basename(output), "task": spec.task, "head": task.head,
        "task_options": spec.task_options, "layout": spec.config.layout,
        "albert_variant": variant_of(spec.config) if variant_of(spec.config) != spec.config.layout else None,
        "max_seq_length": spec.feature_settings["max_seq_length"], "num_choices": num_choices,
        "inputs": _tensor_info(graph_def, input_names), "outputs": _tensor_info(graph_def, output_names),
        "vocab_file": copied.get("vocab_file"), "spm_model": copied.get("spm_model"), "lower_case": spec.lower_case,
        "feature_settings": spec.feature_settings, "model_config": spec.config.to_dict(),
        "checkpoint": os.path.abspath(spec.checkpoint), "trained_kernels": spec.trained_kernels,
        "precision": spec.precision,
        "exported_with": "tensorflow %s" % tensorflow.__version__,
    }
    outputs.write_json(output + SIDECAR_SUFFIX, sidecar)
    if saved_model:
        write_saved_model(graph_def, saved_model, input_names, output_names)
    op_count = len(graph_def.node)
    log("wrote %s (%d nodes, %.1f MB; inputs %s; outputs %s), %s%s" % (
        output, op_count, os.path.getsize(output) / 1e6, ", ".join(input_names), ", ".join(output_names),
        output + SIDECAR_SUFFIX, ", SavedModel " + saved_model if saved_model else ""))
    return sidecar


def main(argv=None):
    from tf_mrc import options
    from tf_mrc.tasks import add_task_arguments, all_task_options
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", required=True, help="the frozen graph to write, e.g. model.pb")
    parser.add_argument("--output_dir", help="a finished run_finetune.py run (supplies everything below); its "
                        "best checkpoint (OUTPUT_DIR/best) when it has one")
    parser.add_argument("--last", action="store_true", help="with --output_dir: its latest checkpoint, not the best")
    parser.add_argument("--checkpoint", help="checkpoint prefix, a directory (its latest), or a transformers model "
                        "directory (converted once, cached; its config and vocabulary are the defaults)")
    parser.add_argument("--config", help="the checkpoint's JSON config")
    parser.add_argument("--layout", choices=list(LAYOUTS))
    parser.add_argument("--albert_variant", choices=["google", "brightmart"])
    add_task_arguments(parser, required=False)
    parser.add_argument("--vocab_file", help="WordPiece vocab.txt (bert, albert)")
    parser.add_argument("--spm_model", help="SentencePiece spiece.model (xlnet)")
    parser.add_argument("--lower_case", dest="lower_case", action="store_true")
    parser.add_argument("--nolower_case", dest="lower_case", action="store_false")
    parser.set_defaults(lower_case=None)  # the layout's convention: uncased BERT/ALBERT, cased XLNet
    options.add_arguments(parser, SETTINGS, defaults=False)   # None: not given (see RUN_FLAGS)
    parser.add_argument("--saved_model", help="also write a SavedModel (serving_default signature) here")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                        help="the encoder's compute precision in the graph (default fp32; bf16 needs TF 2, "
                             "inputs and logits stay int32 / float32)")
    args = parser.parse_args(argv)
    with one_line_errors():
        if args.output_dir:
            ignored = [name for name in RUN_FLAGS + tuple(o.name for o in all_task_options())
                       if getattr(args, name) is not None]
            if ignored:
                raise UserError("--output_dir takes --%s from the run's %s: drop them, or pass --checkpoint, "
                                "--config, --task and --max_seq_length instead of --output_dir"
                                % (", --".join(ignored), RUN_CONFIG))
            spec = spec_from_run(args.output_dir, last=args.last)
        else:
            _read_model_directory(args)
            absent = [name for name in ("checkpoint", "config", "task", "max_seq_length") if not getattr(args, name)]
            if absent:
                raise UserError("pass --output_dir, or all of --%s" % ", --".join(absent))
            options.check_arguments(args, SETTINGS)
            spec = _spec_from_flags(args)
        options.check_precision(args.precision)
        spec.precision = args.precision
        export(spec, args.output, args.saved_model)


# What a run's run_config.json supplies (with --output_dir these flags would go unused).
WINDOW_FLAGS = ("doc_stride", "max_query_length", "max_answer_length", "n_best_size")
RUN_FLAGS = ("checkpoint", "config", "layout", "albert_variant", "task", "max_seq_length", "vocab_file", "spm_model",
             "lower_case") + WINDOW_FLAGS
SETTINGS = ("max_seq_length",) + WINDOW_FLAGS


def _read_model_directory(args):
    """--checkpoint as run_finetune reads --init_checkpoint (tf_mrc.pretrained): a transformers directory's cached
    conversion, or the checkpoint in a TF release directory; the directory's config and vocabulary as the
    defaults of --config / --vocab_file / --spm_model."""
    from tf_mrc import pretrained
    converted = pretrained.convert_cached(args.checkpoint) if args.checkpoint else None
    converted = converted or pretrained.release_directory(args.checkpoint, "--checkpoint")
    if converted:
        flag_names = {"config_file": "config"}  # RunSpec's name -> this command's
        args.checkpoint = converted.checkpoint
        for flag, value in pretrained.unset_defaults(
                converted, lambda flag: getattr(args, flag_names.get(flag, flag))).items():
            setattr(args, flag_names.get(flag, flag), value)


def _spec_from_flags(args):
    """The ExportSpec of the flags; a --checkpoint directory is already its checkpoint (_read_model_directory)."""
    from tf_mrc.tasks import FeatureSettings
    from tf_mrc.modeling.config import config_from_json
    config = config_from_json(args.config, layout=args.layout, albert_variant=args.albert_variant)
    from tf_mrc.tasks import task_options_from
    settings = {name: getattr(args, name) for name in SETTINGS}
    settings.update({name: getattr(FeatureSettings(), name) for name in WINDOW_FLAGS if settings[name] is None})
    return ExportSpec(checkpoint=args.checkpoint, config=config, task=args.task, feature_settings=settings,
                      vocab_file=args.vocab_file, spm_model=args.spm_model, lower_case=args.lower_case,
                      task_options=task_options_from(vars(args), args.task))


if __name__ == "__main__":
    main()
