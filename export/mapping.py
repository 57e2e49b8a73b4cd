"""The one table between PyTorch parameter names and the published TF variable names, read in both directions.

A rule pairs a PyTorch name with a TF name (``{i}``: layer, ``{g}``/``{j}``: ALBERT group / inner group) and says
whether the value is transposed on the way: PyTorch ``nn.Linear`` stores [out, in], TF dense kernels [in, out];
embeddings, LayerNorm, XLNet's [H, N, D] attention kernels and the task heads (stored [out, in] on both sides, as
google's run_squad does) are copied. A rule may also ``stack``: XLNet's TF checkpoint holds the per-layer
``r_w_bias``, ``r_r_bias``, ``r_s_bias`` and ``seg_embed`` as one variable with a leading [L] (untie_r), or one
shared value (untie_r false), where transformers keeps one tensor per layer.
``from_pytorch`` reads the table left to right, ``to_pytorch`` right to left, so a round trip is exact.

PyTorch naming: transformers' BertModel / AlbertModel and their ``...ForQuestionAnswering`` (``qa_outputs``) and
``...ForMultipleChoice`` (``classifier``) heads; brightmart's ALBERT as the albert_zh PyTorch port names it
(BERT names with ``embeddings.word_embeddings_2`` and ``encoder.layer_shared``); XLNetModel,
XLNetForQuestionAnswering (``start_logits.dense``, ``end_logits.{dense_0,LayerNorm,dense_1}``,
``answer_class.{dense_0,dense_1}`` <-> zihangdai/xlnet run_squad's ``start_logits/dense``, ``end_logits/...``,
``answer_class/...``) and XLNetForMultipleChoice (``sequence_summary.summary``, ``logits_proj``). Earlier ports'
spellings (``module.``, ``LayerNorm.gamma|beta``) are read too. The TF side is
what ``tf_mrc.modeling`` builds, under the published names.
"""
import collections
import re

import numpy as np

from tf_mrc.errors import UserError
from tf_mrc.modeling import albert as tf_albert
from tf_mrc.modeling import layers as tf_layers
from tf_mrc.modeling.layouts import descriptor
from tf_mrc.modeling.checkpoint import PRETRAINING_HEAD_PREFIXES, is_training_state, variable_name

Rule = collections.namedtuple("Rule", ["torch", "tf", "transpose", "stack"], defaults=(None,))
STACKED, SHARED = "layers", "shared"  # Rule.stack: TF = the per-layer tensors stacked on a new axis 0 | one copy

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
XLNET_HEADS = (("logits_proj", "cls/multiple_choice"),  # XLNetForMultipleChoice (after its sequence_summary)
               ("answer_class", "cls/answer_class"))
# XLNet's span head (zihangdai/xlnet run_squad, transformers' XLNetForQuestionAnswering): one module per scope.
XLNET_SQUAD = ("start_logits", "end_logits", "answer_class")
HEAD_SCOPES = tuple(scope + "/" for _, scope in HEADS) + tuple(scope + "/" for scope in XLNET_SQUAD)
# PyTorch modules that sit beside the base model in transformers' head classes, not under its prefix.
TORCH_TOP_LEVEL = tuple(sorted({module + "." for module, _ in HEADS + XLNET_HEADS} |
                               {module + "." for module in XLNET_SQUAD})) + ("sequence_summary.",)
# XLNet's mask_emb: in every transformers XLNet state dict and published TF checkpoint, read only by the
# pre-training query stream, never built by tf_mrc: carried through the checkpoint so a round trip is exact.
XLNET_MASK_EMB = "model/transformer/mask_emb/mask_emb"

# PyTorch entries that are not model weights of the encoder or a fine-tuning head.
TORCH_PRETRAINING_PREFIXES = ("cls.", "predictions.", "sop_classifier.", "lm_loss.")
TORCH_BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")
TORCH_WRAPPER_PREFIXES = ("module.", "bert.", "albert.", "transformer.")

# hidden_act words for (kind, gelu form): (TF-style config, transformers config). transformers' "gelu" is the
# exact erf form and "gelu_new" the tanh form; google's TF "gelu" is the tanh form.
ACTIVATION_WORDS = {("gelu", "tanh"): ("gelu", "gelu_new"), ("gelu", "erf"): ("gelu_exact", "gelu"),
                    ("relu", None): ("relu", "relu"), ("tanh", None): ("tanh", "tanh"),
                    ("swish", None): ("swish", "swish")}


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
    """'bert' | 'google' | 'brightmart' | 'xlnet': the weight layout of ``config``."""
    field = descriptor(config).variant_field
    return getattr(config, field) if field else config.layout


def _xlnet_rules(config):
    """transformers' XLNetModel names <-> zihangdai/xlnet's ``model/transformer/...`` (see tf_mrc.modeling.xlnet)."""
    root, layer = "model/transformer/", "model/transformer/layer_{i}/"
    rules = [Rule("word_embedding.weight", root + "word_embedding/lookup_table", False),
             Rule("mask_emb", XLNET_MASK_EMB, False)]
    for bias in ("r_w_bias", "r_r_bias", "r_s_bias"):
        rules.append(Rule("layer.{i}.rel_attn." + bias, root + bias, False, STACKED if config.untie_r else SHARED))
    rules.append(Rule("layer.{i}.rel_attn.seg_embed", root + "seg_embed", False, STACKED))
    rules += [Rule("layer.{i}.rel_attn." + part, layer + "rel_attn/%s/kernel" % part, False) for part in "qkvor"]
    rules += _layer_norm("layer.{i}.rel_attn.layer_norm", layer + "rel_attn/LayerNorm")
    rules += _linear("layer.{i}.ff.layer_1", layer + "ff/layer_1")
    rules += _linear("layer.{i}.ff.layer_2", layer + "ff/layer_2")
    rules += _layer_norm("layer.{i}.ff.layer_norm", layer + "ff/LayerNorm")
    rules += _linear("sequence_summary.summary", descriptor("xlnet").pooled_scope + "summary")
    return rules


def _xlnet_squad_rules():
    """transformers' XLNetForQuestionAnswering heads <-> zihangdai/xlnet run_squad's (tf.layers.dense: [in, out])."""
    rules = _linear("start_logits.dense", "start_logits/dense")
    rules += _linear("end_logits.dense_0", "end_logits/dense_0")
    rules += _layer_norm("end_logits.LayerNorm", "end_logits/LayerNorm")
    rules += _linear("end_logits.dense_1", "end_logits/dense_1")
    rules += _linear("answer_class.dense_0", "answer_class/dense_0")
    return rules + [Rule("answer_class.dense_1.weight", "answer_class/dense_1/kernel", True)]


def _head_rules(heads):
    rules = []
    for torch_module, tf_scope in heads:
        rules += [Rule(torch_module + ".weight", tf_scope + "/output_weights", False),
                  Rule(torch_module + ".bias", tf_scope + "/output_bias", False)]
    return rules


def _bert_embedding_rules():
    rules = [Rule("embeddings.%s.weight" % name, "bert/embeddings/" + name, False)
             for name in ("word_embeddings", "token_type_embeddings", "position_embeddings")]
    return rules + _layer_norm("embeddings.LayerNorm", "bert/embeddings/LayerNorm")


def _bert_rules(config):
    return (_bert_embedding_rules() +
            _block("encoder.layer.{i}.", "bert/encoder/layer_{i}/", TORCH_BERT_BLOCK, tf_layers.BERT_BLOCK) +
            _linear("pooler.dense", "bert/pooler/dense") + _head_rules(HEADS))


def _brightmart_rules(config):
    return (_bert_embedding_rules() +
            [Rule("embeddings.word_embeddings_2.weight", "bert/embeddings/word_embeddings_2", True)] +
            _block("encoder.layer_shared.", "bert/encoder/layer_shared/", TORCH_BERT_BLOCK, tf_layers.BERT_BLOCK) +
            _linear("pooler.dense", "bert/pooler/dense") + _head_rules(HEADS))


def _google_albert_rules(config):
    return (_bert_embedding_rules() +
            _linear("encoder.embedding_hidden_mapping_in", "bert/encoder/embedding_hidden_mapping_in") +
            _block("encoder.albert_layer_groups.{g}.albert_layers.{j}.",
                   "bert/encoder/transformer/group_{g}/inner_group_{j}/", TORCH_ALBERT_BLOCK, tf_albert.GOOGLE_BLOCK) +
            _linear("pooler", "bert/pooler/dense") + _head_rules(HEADS))


def _xlnet_all_rules(config):
    return _xlnet_rules(config) + _xlnet_squad_rules() + _head_rules(XLNET_HEADS)


# One entry per weight variant (variant_of): its name rules (encoder without the base-model prefix, heads at top
# level), the base model's prefix in transformers' head classes, the transformers class per set of heads with
# whether it holds the pooled output (BERT's QA classes and XLNet's base / QA classes have none; brightmart's
# ALBERT has no transformers class), config settings that change the function (tf_mrc computes XLNet's
# fine-tuning form only), base-model weights tf_mrc never builds but checkpoints carry (XLNet's mask_emb), and for
# weights no transformers class holds, the PyTorch port whose names they follow and that port's config keys.
Conversion = collections.namedtuple("Conversion", ["rules", "base_prefix", "architectures", "fixed_settings",
                                                   "carried", "port"], defaults=(None,))
Port = collections.namedtuple("Port", ["model", "names", "config"])
CONVERSIONS = {
    "bert": Conversion(_bert_rules, "bert.", {
        (): ("BertModel", True), ("cls/squad",): ("BertForQuestionAnswering", False),
        ("cls/multiple_choice",): ("BertForMultipleChoice", True)}, {}, lambda config: {}),
    "google": Conversion(_google_albert_rules, "albert.", {
        (): ("AlbertModel", True), ("cls/squad",): ("AlbertForQuestionAnswering", False),
        ("cls/multiple_choice",): ("AlbertForMultipleChoice", True)}, {}, lambda config: {}),
    "brightmart": Conversion(_brightmart_rules, "bert.", {}, {}, lambda config: {}, Port(
        "brightmart ALBERT", "the albert_zh PyTorch port",
        {"layout": "albert", "albert_variant": "brightmart", "share_type": "all", "ln_type": "postln"})),
    "xlnet": Conversion(_xlnet_all_rules, "transformer.", {
        (): ("XLNetModel", False), XLNET_SQUAD: ("XLNetForQuestionAnswering", False),
        ("cls/multiple_choice",): ("XLNetForMultipleChoice", True)},
        {"attn_type": "bi", "bi_data": False, "summary_type": "last", "summary_use_proj": True,
         "summary_activation": "tanh"},
        lambda config: {XLNET_MASK_EMB: [1, 1, config.hidden_size]}),
}


def conversion_of(config):
    return CONVERSIONS[variant_of(config)]


def rules_for(config):
    """Every rule of ``config``'s weight variant."""
    return conversion_of(config).rules(config)


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
        self.num_layers = config.num_hidden_layers
        self._torch = [(_pattern(rule.torch), rule) for rule in self.rules]
        self._tf = [(_pattern(rule.tf), rule) for rule in self.rules]

    def to_tf(self, torch_name):
        """(TF name, rule, layer) for a canonical PyTorch name, or None; ``layer`` is the slice of a stacking
        rule's TF variable that this tensor fills (None for other rules)."""
        for pattern, rule in self._torch:
            match = pattern.match(torch_name)
            if match:
                indices = match.groupdict()
                return rule.tf.format(**indices), rule, int(indices["i"]) if rule.stack else None
        return None

    def to_torch(self, tf_name):
        """[(canonical PyTorch name, rule, layer)] for a TF name: one entry, or one per layer for a stacking
        rule; [] when no rule matches."""
        for pattern, rule in self._tf:
            match = pattern.match(tf_name)
            if match:
                if rule.stack:
                    return [(rule.torch.format(i=layer), rule, layer) for layer in range(self.num_layers)]
                return [(rule.torch.format(**match.groupdict()), rule, None)]
        return []


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
        build_head("span_class", output, {"segment_ids": ids}, None, config.initializer_range, False,
                   span_head=descriptor(config).span_head)
        build_head("choice", output, {"choice_mask": tf.ones([1, 1])}, 1, config.initializer_range, False)
        return {variable_name(v): v.shape.as_list() for v in tf.global_variables()}


def carried_variables(config):
    """{TF name: shape} of base-model weights tf_mrc never builds but a checkpoint carries (XLNet's mask_emb)."""
    return conversion_of(config).carried(config)


def _listing(names, limit=8):
    shown = ", ".join(names[:limit])
    return shown + (" ... and %d more" % (len(names) - limit) if len(names) > limit else "")


def _pooled_words(config):
    """(what the pooled output is called, the TF scope it lives in) for notes."""
    layout = descriptor(config)
    return layout.pooled_name, layout.pooled_scope.rstrip("/")


def _assemble_stacked(tf_name, rule, parts, num_layers):
    """One TF value from the per-layer tensors {layer: (PyTorch name, value)}, or None when layers are absent."""
    if sorted(parts) != list(range(num_layers)):
        return None
    ordered = [parts[layer][1] for layer in range(num_layers)]
    if rule.stack == STACKED:
        return np.stack(ordered)
    if any(not np.array_equal(value, ordered[0]) for value in ordered[1:]):
        raise ConversionError("%s differs between layers (%s ...) but the config says untie_r false: set untie_r "
                              "true" % (tf_name, parts[0][0]))
    return ordered[0]


def torch_to_tf(state, config):
    """PyTorch weights {name: ndarray} -> ({TF name: float32 ndarray}, notes) for ``config``.

    Raises ConversionError naming every tensor that has no place in the model, has the wrong shape, or that
    the model needs and the weights lack. A missing pooler (transformers' QA models have none; nor have XLNet's
    QA class) is written as zeros so the TF graph restores completely: the span head never reads it. XLNet
    weights without any head (XLNetModel: a pre-trained encoder) leave the sequence summary out, as published
    XLNet checkpoints do, so fine-tuning starts it from the initializer as XLNet's run_classifier does.
    """
    table, built = NameTable(config), model_variables(config)
    expected = dict(built, **carried_variables(config))
    values, sources, notes = {}, {}, []
    stacked = {}  # TF name -> (rule, {layer: (PyTorch name, value)})
    unmapped, misshaped, pretraining = [], [], []
    for name in sorted(state):
        canonical = canonical_torch_name(name)
        if canonical in TORCH_BUFFERS:
            continue
        if canonical.startswith(TORCH_PRETRAINING_PREFIXES):
            pretraining.append(canonical)
            continue
        found = table.to_tf(canonical)
        if found is None or found[0] not in expected or (found[2] is not None and found[2] >= table.num_layers):
            unmapped.append(name)
            continue
        tf_name, rule, layer = found
        value = np.asarray(state[name])
        value = value.T if rule.transpose else value
        wanted = expected[tf_name][1:] if rule.stack == STACKED else expected[tf_name]
        if list(value.shape) != wanted:
            misshaped.append("%s %s (model wants %s as %s)" % (name, list(np.shape(state[name])), tf_name, wanted))
            continue
        value = np.ascontiguousarray(value, dtype=np.float32)
        parts = stacked.setdefault(tf_name, (rule, {}))[1] if layer is not None else {}
        if tf_name in values or layer in parts:
            first = sources[tf_name] if tf_name in values else parts[layer][0]
            raise ConversionError("PyTorch tensors %s and %s both map to %s" % (first, name, tf_name))
        if layer is None:
            values[tf_name], sources[tf_name] = value, name
        else:
            parts[layer] = (name, value)
    for tf_name, (rule, parts) in sorted(stacked.items()):
        value = _assemble_stacked(tf_name, rule, parts, table.num_layers)
        if value is not None:  # else reported below with what the model lacks
            values[tf_name] = value
    layout = "%s (%s)" % (config.layout, variant_of(config)) if variant_of(config) != config.layout else config.layout
    if unmapped:
        raise ConversionError("%d PyTorch tensors have no place in this %d-layer %s model (check --layout, "
                              "--albert_variant and the config): %s" % (
                                  len(unmapped), config.num_hidden_layers, layout, _listing(unmapped)))
    if misshaped:
        raise ConversionError("%d PyTorch tensors have the wrong shape for the config: %s" % (
            len(misshaped), _listing(misshaped, 4)))
    heads = heads_in(values)
    what, scope = _pooled_words(config)
    missing = sorted(n for n in built if n not in values and not n.startswith(HEAD_SCOPES))
    only_pooled = missing and all(n.startswith(scope + "/") for n in missing)
    pretrained_without = not heads and not descriptor(config).pretrained_pooled
    if only_pooled and not pretrained_without and (not heads or not _target(config, heads)[1]):
        for name in missing:
            values[name] = np.zeros(expected[name], np.float32)
        notes.append("the PyTorch weights have no %s (transformers' QA models drop it): wrote %s as zeros so the "
                     "TF graph restores completely; the span head never reads it" % (what, scope))
    elif only_pooled and pretrained_without:
        notes.append("the PyTorch weights have no %s (XLNet pre-training has none): left out, as in published XLNet "
                     "checkpoints; fine-tuning starts %s from the initializer" % (what, scope))
    elif missing:
        raise ConversionError("the PyTorch weights lack %d tensors this %s model needs: %s" % (
            len(missing), layout, _listing(missing)))
    if pretraining:
        notes.append("skipped %d pretraining-head tensors (%s)" % (
            len(pretraining), ", ".join(sorted({".".join(n.split(".")[:2]) for n in pretraining}))))
    return values, notes


def heads_in(names):
    """The TF head scopes present among ``names``, in HEAD_SCOPES order."""
    return tuple(scope.rstrip("/") for scope in HEAD_SCOPES if any(name.startswith(scope) for name in names))


def _target(config, heads):
    """(the transformers class that holds exactly these weights or None, whether it holds the pooled output)."""
    return conversion_of(config).architectures.get(heads, (None, True))


def architecture(config, heads):
    """The transformers class that holds exactly these weights, or None (brightmart, CJRC's class head)."""
    return _target(config, heads)[0]


def tf_to_torch(values, config):
    """TF checkpoint values {name: ndarray} -> (PyTorch state {name: ndarray}, transformers class or None, notes).

    Names are those the transformers class's own state_dict() has: the base model's prefix only when a head
    is present, and no pooled output where the class has none (BERT's QA classes, XLNetModel and
    XLNetForQuestionAnswering); weights no transformers class holds (brightmart, CJRC's class head) are
    all written. XLNet's mask_emb is written as stored, or as zeros when the checkpoint lacks it (fine-tuning
    never builds it). Optimizer state is ignored.
    """
    table, expected, carried = NameTable(config), model_variables(config), carried_variables(config)
    model, notes, unknown, misshaped, pretraining = {}, [], [], [], []
    for name in sorted(values):
        if is_training_state(name):
            continue
        wanted = expected.get(name) or carried.get(name)
        if wanted is None and name.startswith(PRETRAINING_HEAD_PREFIXES):
            pretraining.append(name)
        elif wanted is None:
            unknown.append(name)
        elif list(np.shape(values[name])) != wanted:
            misshaped.append("%s %s (config wants %s)" % (name, list(np.shape(values[name])), wanted))
        else:
            model[name] = values[name]
    if unknown:
        raise ConversionError("%d checkpoint variables have no place in this %s model: %s" % (
            len(unknown), config.layout, _listing(unknown)))
    if misshaped:
        raise ConversionError("%d checkpoint variables have the wrong shape for the config: %s" % (
            len(misshaped), _listing(misshaped, 4)))
    heads = heads_in(model)
    target, holds_pooled = _target(config, heads)
    what, scope = _pooled_words(config)
    drop_pooled = target is not None and not holds_pooled
    missing = sorted(n for n in expected if n not in model and not n.startswith(HEAD_SCOPES) and
                     not (drop_pooled and n.startswith(scope + "/")))
    if missing:
        raise ConversionError("the checkpoint lacks %d variables of the %s encoder: %s" % (
            len(missing), config.layout, _listing(missing)))
    for name, shape in carried.items():
        if name not in model:
            model[name] = np.zeros(shape, np.float32)
            notes.append("%s is not in the checkpoint (fine-tuning never builds it): wrote zeros; only XLNet's "
                         "pre-training query stream reads it" % name)
    prefix = conversion_of(config).base_prefix if heads else ""
    state = {}
    for name, value in model.items():
        if drop_pooled and name.startswith(scope + "/"):
            continue
        for torch_name, rule, layer in table.to_torch(name):
            part = value[layer] if rule.stack == STACKED else value
            if not torch_name.startswith(TORCH_TOP_LEVEL):
                torch_name = prefix + torch_name
            state[torch_name] = np.ascontiguousarray(part.T if rule.transpose else part)
    if drop_pooled and any(n.startswith(scope + "/") for n in model):
        notes.append("%s not written: %s has none (the span head never reads it)" % (what, target))
    if target is None:
        port = conversion_of(config).port
        notes.append("no transformers class holds these weights (%s); names follow %s" % (
            port.model if port else "heads " + ", ".join(heads), port.names if port else "transformers' conventions"))
    if pretraining:
        notes.append("skipped %d pretraining-head variables (%s)" % (len(pretraining), ", ".join(sorted(
            {start.rstrip("/") for start in PRETRAINING_HEAD_PREFIXES for n in pretraining if n.startswith(start)}))))
    return state, target, notes


def tf_config_dict(config):
    """A published-style TF config for ``config`` (google's keys; XLNet's own for XLNet) that makes tf_mrc
    compute the same function: the activation word is unambiguous (``gelu`` = tanh form, ``gelu_exact`` = erf)."""
    layout = descriptor(config)
    key_of = {field: key for key, field in layout.published_keys}
    key_of["head_size"] = key_of.get("d_head", "head_size")
    out = {key_of.get(field, field): getattr(config, field) for field in layout.config_fields}
    out.update({layout.activation_key: ACTIVATION_WORDS[config.activation()][0], "gelu_convention": "tf",
                "layout": layout.name})
    if layout.variant_field:
        out[layout.variant_field] = getattr(config, layout.variant_field)
    return out


def check_fixed_settings(raw, path, config):
    """A transformers config whose settings change the function (e.g. XLNet's summary_type 'first') cannot be
    converted: tf_mrc computes XLNet's fine-tuning form only."""
    if not isinstance(raw, dict):
        return
    for key, value in conversion_of(config).fixed_settings.items():
        if key in raw and raw[key] != value:
            raise ConversionError("config %s: %s %r is not supported (tf_mrc's XLNet computes %s %r)" % (
                path, key, raw[key], key, value))


def hf_config_dict(config, target):
    """A transformers config.json for ``config`` (``target``: the class name, or None)."""
    from tf_mrc.modeling.config import LAYER_NORM_EPSILON
    words = ACTIVATION_WORDS[config.activation()]
    layout = descriptor(config)
    tf_style = tf_config_dict(config)
    if layout.published_keys:  # XLNet: transformers keeps the published keys but says vocab_size for n_token
        out = {key: value for key, value in tf_style.items() if key not in ("n_token", "gelu_convention", "layout")}
        out.update(conversion_of(config).fixed_settings, vocab_size=config.vocab_size,
                   dropout=config.hidden_dropout_prob, initializer_range=config.initializer_range)
    else:
        out = {field: getattr(config, field) for field in layout.config_fields}
        out.update(pad_token_id=0)
    out.update({layout.activation_key: words[1], "layer_norm_eps": LAYER_NORM_EPSILON})
    if target or layout.published_keys:
        out.update(model_type=config.layout)
    if target:
        out.update(architectures=[target])
    if conversion_of(config).port:  # e.g. the albert_zh PyTorch port's keys: transformers has no such model
        out.update(conversion_of(config).port.config)
    return out
