"""The one table between PyTorch parameter names and the published TF variable names, read in both directions.

A rule pairs a PyTorch name with a TF name (``{i}``: layer, ``{g}``/``{j}``: ALBERT group / inner group) and says
whether the value is transposed on the way: PyTorch ``nn.Linear`` stores [out, in], TF dense kernels [in, out];
embeddings, LayerNorm and the task heads (stored [out, in] on both sides, as google's run_squad does) are copied.
``from_pytorch`` reads the table left to right, ``to_pytorch`` right to left, so a round trip is exact.

PyTorch naming: transformers' BertModel / AlbertModel and their ``...ForQuestionAnswering`` (``qa_outputs``) and
``...ForMultipleChoice`` (``classifier``) heads; brightmart's ALBERT as the albert_zh PyTorch port names it
(BERT names with ``embeddings.word_embeddings_2`` and ``encoder.layer_shared``). Earlier ports' spellings
(``module.``, ``LayerNorm.gamma|beta``) are read too. The TF side is what ``tf_mrc.modeling`` builds.
"""
import collections
import re

import numpy as np

from tf_mrc.errors import UserError
from tf_mrc.modeling import albert as tf_albert
from tf_mrc.modeling import layers as tf_layers
from tf_mrc.modeling.checkpoint import PRETRAINING_HEAD_PREFIXES, is_training_state

Rule = collections.namedtuple("Rule", ["torch", "tf", "transpose"])

# PyTorch sub-module names of one transformer block, in the same slots as tf_mrc.modeling.layers.BlockNames.
TORCH_BERT_BLOCK = tf_layers.BlockNames(
    attention="attention.self", attention_output="attention.output.dense", attention_norm="attention.output.LayerNorm",
    intermediate="intermediate.dense", output="output.dense", output_norm="output.LayerNorm")
TORCH_ALBERT_BLOCK = tf_layers.BlockNames(
    attention="attention", attention_output="attention.dense", attention_norm="attention.LayerNorm",
    intermediate="ffn", output="ffn_output", output_norm="full_layer_layer_norm")

# Task heads: PyTorch module (top level, no base-model prefix) <-> TF scope, both [out, in].
HEADS = (("qa_outputs", "cls/squad"),            # transformers' ...ForQuestionAnswering
         ("classifier", "cls/multiple_choice"),  # transformers' ...ForMultipleChoice
         ("answer_class", "cls/answer_class"))   # tf_mrc's CJRC yes/no/unknown head (no transformers class)
HEAD_SCOPES = tuple(scope + "/" for _, scope in HEADS)

# PyTorch entries that are not model weights of the encoder or a fine-tuning head.
TORCH_PRETRAINING_PREFIXES = ("cls.", "predictions.", "sop_classifier.")
TORCH_BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")
TORCH_WRAPPER_PREFIXES = ("module.", "bert.", "albert.")

# hidden_act words for (kind, gelu form): (TF-style config, transformers config). transformers' "gelu" is the
# exact erf form and "gelu_new" the tanh form; google's TF "gelu" is the tanh form.
ACTIVATION_WORDS = {("gelu", "tanh"): ("gelu", "gelu_new"), ("gelu", "erf"): ("gelu_exact", "gelu"),
                    ("relu", None): ("relu", "relu"), ("tanh", None): ("tanh", "tanh"),
                    ("swish", None): ("swish", "swish")}
CONFIG_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
               "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings", "type_vocab_size",
               "initializer_range")
ALBERT_CONFIG_KEYS = ("embedding_size", "num_hidden_groups", "inner_group_num")
_ARCHITECTURE_NAMES = {"bert": "Bert", "albert": "Albert"}
_ARCHITECTURE_SUFFIX = {(): "Model", ("cls/squad",): "ForQuestionAnswering",
                        ("cls/multiple_choice",): "ForMultipleChoice"}


class ConversionError(UserError):
    """Weights that do not fit the model; the message is one line listing the offending tensors."""


def _linear(torch_module, tf_scope):
    return [Rule(torch_module + ".weight", tf_scope + "/kernel", True),
            Rule(torch_module + ".bias", tf_scope + "/bias", False)]


def _layer_norm(torch_module, tf_scope):
    return [Rule(torch_module + ".weight", tf_scope + "/gamma", False),
            Rule(torch_module + ".bias", tf_scope + "/beta", False)]


def _block(torch_prefix, tf_prefix, torch_names, tf_names):
    rules = []
    for part in ("query", "key", "value"):
        rules += _linear(torch_prefix + torch_names.attention + "." + part,
                         tf_prefix + tf_names.attention + "/" + part)
    for slot in ("attention_output", "intermediate", "output"):
        rules += _linear(torch_prefix + getattr(torch_names, slot), tf_prefix + getattr(tf_names, slot))
    for slot in ("attention_norm", "output_norm"):
        rules += _layer_norm(torch_prefix + getattr(torch_names, slot), tf_prefix + getattr(tf_names, slot))
    return rules


def variant_of(config):
    """'bert' | 'google' | 'brightmart': the weight layout of ``config``."""
    return config.albert_variant if config.layout == "albert" else config.layout


def rules_for(config):
    """Every rule of ``config``'s layout (encoder names without the base-model prefix, heads at top level)."""
    variant = variant_of(config)
    if variant not in ("bert", "google", "brightmart"):
        raise ConversionError("weight conversion supports the bert and albert layouts, not %s" % config.layout)
    rules = [Rule("embeddings.%s.weight" % name, "bert/embeddings/" + name, False)
             for name in ("word_embeddings", "token_type_embeddings", "position_embeddings")]
    rules += _layer_norm("embeddings.LayerNorm", "bert/embeddings/LayerNorm")
    if variant == "bert":
        rules += _block("encoder.layer.{i}.", "bert/encoder/layer_{i}/", TORCH_BERT_BLOCK, tf_layers.BERT_BLOCK)
        rules += _linear("pooler.dense", "bert/pooler/dense")
    elif variant == "brightmart":
        rules.append(Rule("embeddings.word_embeddings_2.weight", "bert/embeddings/word_embeddings_2", True))
        rules += _block("encoder.layer_shared.", "bert/encoder/layer_shared/", TORCH_BERT_BLOCK, tf_layers.BERT_BLOCK)
        rules += _linear("pooler.dense", "bert/pooler/dense")
    else:
        rules += _linear("encoder.embedding_hidden_mapping_in", "bert/encoder/embedding_hidden_mapping_in")
        rules += _block("encoder.albert_layer_groups.{g}.albert_layers.{j}.",
                        "bert/encoder/transformer/group_{g}/inner_group_{j}/", TORCH_ALBERT_BLOCK,
                        tf_albert.GOOGLE_BLOCK)
        rules += _linear("pooler", "bert/pooler/dense")
    for torch_module, tf_scope in HEADS:
        rules += [Rule(torch_module + ".weight", tf_scope + "/output_weights", False),
                  Rule(torch_module + ".bias", tf_scope + "/output_bias", False)]
    return rules


def _pattern(template):
    """'encoder.layer.{i}.x' -> a regex whose groups capture the indices."""
    pattern = re.escape(template)
    for index in ("i", "g", "j"):
        pattern = pattern.replace(re.escape("{%s}" % index), r"(?P<%s>\d+)" % index)
    return re.compile(pattern + "$")


class NameTable:
    """The rules of one layout, matched in either direction."""

    def __init__(self, config):
        self.rules = rules_for(config)
        self._torch = [(_pattern(rule.torch), rule) for rule in self.rules]
        self._tf = [(_pattern(rule.tf), rule) for rule in self.rules]

    @staticmethod
    def _lookup(compiled, name, target):
        for pattern, rule in compiled:
            match = pattern.match(name)
            if match:
                return getattr(rule, target).format(**match.groupdict()), rule.transpose
        return None

    def to_tf(self, torch_name):
        """(TF name, transpose) for a canonical PyTorch name, or None."""
        return self._lookup(self._torch, torch_name, "tf")

    def to_torch(self, tf_name):
        """(canonical PyTorch name, transpose) for a TF name, or None."""
        return self._lookup(self._tf, tf_name, "torch")


def canonical_torch_name(name):
    """Strip DataParallel / base-model prefixes and read old ports' LayerNorm ``gamma|beta`` as ``weight|bias``."""
    stripped = True
    while stripped:
        stripped = False
        for prefix in TORCH_WRAPPER_PREFIXES:
            if name.startswith(prefix):
                name, stripped = name[len(prefix):], True
    return re.sub(r"\.gamma$", ".weight", re.sub(r"\.beta$", ".bias", name))


def model_variables(config):
    """{TF name: shape} of everything tf_mrc.modeling builds for ``config``: the encoder and every head."""
    from tf_mrc.compat import tf
    from tf_mrc.modeling import build_encoder
    from tf_mrc.modeling.heads import build_head
    with tf.Graph().as_default():
        ids = tf.placeholder(tf.int32, [None, None])
        output = build_encoder(config, ids, ids, ids, False, "reference")
        build_head("span_class", output, {}, None, config.initializer_range, False)
        build_head("choice", output, {"choice_mask": tf.ones([1, 1])}, 1, config.initializer_range, False)
        return {re.sub(r":\d+$", "", v.name): v.shape.as_list() for v in tf.global_variables()}


def _listing(names, limit=8):
    shown = ", ".join(names[:limit])
    return shown + (" ... and %d more" % (len(names) - limit) if len(names) > limit else "")


def _is_pooler(tf_name):
    return tf_name.startswith("bert/pooler/")


def torch_to_tf(state, config):
    """PyTorch weights {name: ndarray} -> ({TF name: float32 ndarray}, notes) for ``config``.

    Raises ConversionError naming every tensor that has no place in the model, has the wrong shape, or that
    the model needs and the weights lack. A missing pooler (transformers' QA models have none) is written as
    zeros so the TF graph restores completely: the span head never reads it.
    """
    table, expected = NameTable(config), model_variables(config)
    values, sources, notes = {}, {}, []
    unmapped, misshaped, pretraining = [], [], []
    for name in sorted(state):
        canonical = canonical_torch_name(name)
        if canonical in TORCH_BUFFERS:
            continue
        if canonical.startswith(TORCH_PRETRAINING_PREFIXES):
            pretraining.append(canonical)
            continue
        found = table.to_tf(canonical)
        if found is None or found[0] not in expected:
            unmapped.append(name)
            continue
        tf_name, transpose = found
        value = np.asarray(state[name])
        value = value.T if transpose else value
        if list(value.shape) != expected[tf_name]:
            misshaped.append("%s %s (model wants %s as %s)" % (name, list(np.shape(state[name])), tf_name,
                                                               expected[tf_name]))
            continue
        if tf_name in values:
            raise ConversionError("PyTorch tensors %s and %s both map to %s" % (sources[tf_name], name, tf_name))
        values[tf_name], sources[tf_name] = np.ascontiguousarray(value, dtype=np.float32), name
    layout = "%s (%s)" % (config.layout, variant_of(config)) if config.layout == "albert" else config.layout
    if unmapped:
        raise ConversionError("%d PyTorch tensors have no place in this %d-layer %s model (check --layout, "
                              "--albert_variant and the config): %s" % (
                                  len(unmapped), config.num_hidden_layers, layout, _listing(unmapped)))
    if misshaped:
        raise ConversionError("%d PyTorch tensors have the wrong shape for the config: %s" % (
            len(misshaped), _listing(misshaped, 4)))
    missing = sorted(n for n in expected if n not in values and not n.startswith(HEAD_SCOPES))
    if missing and all(_is_pooler(n) for n in missing):
        for name in missing:
            values[name] = np.zeros(expected[name], np.float32)
        notes.append("the PyTorch weights have no pooler (transformers' QA models drop it): wrote bert/pooler/dense "
                     "as zeros so the TF graph restores completely; the span head never reads it")
    elif missing:
        raise ConversionError("the PyTorch weights lack %d tensors this %s model needs: %s" % (
            len(missing), layout, _listing(missing)))
    if pretraining:
        notes.append("skipped %d pretraining-head tensors (%s)" % (
            len(pretraining), ", ".join(sorted({".".join(n.split(".")[:2]) for n in pretraining}))))
    return values, notes


def heads_in(names):
    """The TF head scopes present among ``names``, in HEADS order."""
    return tuple(scope for _, scope in HEADS if scope + "/output_weights" in names)


def architecture(config, heads):
    """The transformers class that holds exactly these weights, or None (brightmart, CJRC's class head)."""
    if variant_of(config) == "brightmart" or heads not in _ARCHITECTURE_SUFFIX:
        return None
    return _ARCHITECTURE_NAMES[config.layout] + _ARCHITECTURE_SUFFIX[heads]


def tf_to_torch(values, config):
    """TF checkpoint values {name: ndarray} -> (PyTorch state {name: ndarray}, transformers class or None, notes).

    Names are those the transformers class's own state_dict() has: the base model's prefix only when a head
    is present, and no pooler for question answering (those classes have none); weights no transformers
    class holds (brightmart, CJRC's class head) are all written. Optimizer state is ignored.
    """
    table, expected = NameTable(config), model_variables(config)
    model, notes, unknown, misshaped, pretraining = {}, [], [], [], []
    for name in sorted(values):
        if is_training_state(name):
            continue
        if name.startswith(PRETRAINING_HEAD_PREFIXES):
            pretraining.append(name)
            continue
        if name not in expected:
            unknown.append(name)
        elif list(np.shape(values[name])) != expected[name]:
            misshaped.append("%s %s (config wants %s)" % (name, list(np.shape(values[name])), expected[name]))
        else:
            model[name] = values[name]
    if unknown:
        raise ConversionError("%d checkpoint variables have no place in this %s model: %s" % (
            len(unknown), config.layout, _listing(unknown)))
    if misshaped:
        raise ConversionError("%d checkpoint variables have the wrong shape for the config: %s" % (
            len(misshaped), _listing(misshaped, 4)))
    missing = sorted(n for n in expected if n not in model and not n.startswith(HEAD_SCOPES))
    if missing:
        raise ConversionError("the checkpoint lacks %d variables of the %s encoder: %s" % (
            len(missing), config.layout, _listing(missing)))
    heads = heads_in(model)
    target = architecture(config, heads)
    prefix = ("albert." if variant_of(config) == "google" else "bert.") if heads else ""
    state = {}
    for name, value in model.items():
        if target and heads == ("cls/squad",) and _is_pooler(name):
            continue
        torch_name, transpose = table.to_torch(name)
        if not name.startswith(HEAD_SCOPES):
            torch_name = prefix + torch_name
        state[torch_name] = np.ascontiguousarray(value.T if transpose else value)
    if target and heads == ("cls/squad",):
        notes.append("pooler not written: %s has none (the span head never reads it)" % target)
    if target is None:
        notes.append("no transformers class holds these weights (%s); names follow %s" % (
            "brightmart ALBERT" if variant_of(config) == "brightmart" else "heads " + ", ".join(heads),
            "the albert_zh PyTorch port" if variant_of(config) == "brightmart" else "transformers' conventions"))
    if pretraining:
        notes.append("skipped %d pretraining-head variables (cls/predictions, cls/seq_relationship)" % len(pretraining))
    return state, target, notes


def tf_config_dict(config):
    """A published-style TF config for ``config`` (google's keys) that makes tf_mrc compute the same function:
    the activation word is unambiguous (``gelu`` = tanh form, ``gelu_exact`` = erf form)."""
    words = ACTIVATION_WORDS[config.activation()]
    out = {key: getattr(config, key) for key in CONFIG_KEYS}
    out.update(hidden_act=words[0], gelu_convention="tf", layout=config.layout)
    if config.layout == "albert":
        out.update({key: getattr(config, key) for key in ALBERT_CONFIG_KEYS}, albert_variant=config.albert_variant)
    return out


def hf_config_dict(config, target):
    """A transformers config.json for ``config`` (``target``: the class name, or None)."""
    from tf_mrc.modeling.config import LAYER_NORM_EPSILON
    words = ACTIVATION_WORDS[config.activation()]
    out = {key: getattr(config, key) for key in CONFIG_KEYS}
    out.update(hidden_act=words[1], layer_norm_eps=LAYER_NORM_EPSILON, pad_token_id=0)
    if target:
        out.update(architectures=[target], model_type=config.layout)
    if config.layout == "albert":
        out.update({key: getattr(config, key) for key in ALBERT_CONFIG_KEYS})
    if variant_of(config) == "brightmart":  # the albert_zh PyTorch port's keys; transformers has no such model
        out.update(layout="albert", albert_variant="brightmart", share_type="all", ln_type="postln")
    return out
