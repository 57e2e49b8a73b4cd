"""One descriptor per encoder layout: everything outside the encoder module that differs between layouts.

Code that needs a layout-dependent answer asks ``descriptor(config)`` (or ``descriptor(name)``) instead of
comparing layout names. A new encoder is one module under tf_mrc/modeling with ``encode`` (see
tf_mrc.modeling.build_encoder), one Layout here, its config class in tf_mrc.modeling.config when it has fields
of its own, one Conversion in export.mapping (PyTorch names), and tests.
This module imports no TensorFlow: tokenization, the audit and the demo's client side read it.
"""
import collections
import importlib

from tf_mrc.errors import UserError

Layout = collections.namedtuple("Layout", [
    "name",
    "module",              # tf_mrc.modeling.<module>.encode builds the encoder
    "tokenizer",           # tf_mrc.tokenization.<tokenizer> module: "wordpiece" | "sentencepiece"
    "vocabulary_flag",     # the flag naming the tokenizer's file: "vocab_file" | "spm_model"
    "lower_case",          # the published Chinese vocabulary's casing when the user does not say
    "padding",             # "right" | "left": where pack puts padding (XLNet keeps <cls> last)
    "passage_first",       # span windows laid out passage first (XLNet's run_squad) or question first
    "absolute_positions",  # learned position embeddings bound max_seq_length (XLNet's relative ones do not)
    "pooled_scope",        # the encoder's <cls> summary ("pooled output") variables
    "pooled_name",         # what that summary is called in messages
    "pretrained_pooled",   # the published pre-trained checkpoints hold the summary (XLNet's do not)
    "span_head",           # tf_mrc.modeling.heads.SPAN_HEADS: "linear" (BERT's run_squad) | "xlnet"
    "recompute",           # gradient checkpointing per block supported
    "published_keys",      # ((key in the published JSON config, ModelConfig field), ...) where they differ
    "config_fields",       # the ModelConfig fields a TF-style config of this layout writes (d_head: head_size)
    "activation_key",      # the published config's key for the activation
    "variant_field",       # the ModelConfig field that picks one of several weight layouts (ALBERT's), or None
    "config_class",        # the tf_mrc.modeling.config class of this layout's config
    "detect_key",          # a key only this layout's published config has (the layout of a file that names none)
    "word_embeddings",     # the word-embedding table's variable (a checkpoint's vocabulary size)
])

_BERT_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings", "type_vocab_size",
                "initializer_range")

BERT = Layout(name="bert", module="bert", tokenizer="wordpiece", vocabulary_flag="vocab_file", lower_case=True,
              padding="right", passage_first=False, absolute_positions=True, pooled_scope="bert/pooler/",
              pooled_name="pooler", pretrained_pooled=True, span_head="linear", recompute=True, published_keys=(),
              config_fields=_BERT_FIELDS, activation_key="hidden_act", variant_field=None,
              config_class="ModelConfig", detect_key=None, word_embeddings="bert/embeddings/word_embeddings")
ALBERT = BERT._replace(name="albert", module="albert", variant_field="albert_variant", config_class="AlbertConfig",
                       detect_key="embedding_size",
                       config_fields=_BERT_FIELDS + ("embedding_size", "num_hidden_groups", "inner_group_num"))
XLNET = Layout(name="xlnet", module="xlnet", tokenizer="sentencepiece", vocabulary_flag="spm_model",
               lower_case=False, padding="left", passage_first=True, absolute_positions=False,
               pooled_scope="model/sequnece_summary/",  # sic: zihangdai/xlnet's spelling of the published scope
               pooled_name="sequence summary", pretrained_pooled=False, span_head="xlnet", recompute=False,
               published_keys=(("d_model", "hidden_size"), ("n_layer", "num_hidden_layers"),
                               ("n_head", "num_attention_heads"), ("d_inner", "intermediate_size"),
                               ("ff_activation", "hidden_act"), ("n_token", "vocab_size"), ("d_head", "d_head"),
                               ("untie_r", "untie_r"), ("clamp_len", "clamp_len")),
               config_fields=("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "head_size",
                              "intermediate_size", "untie_r", "clamp_len"),
               activation_key="ff_activation", variant_field=None, config_class="XLNetConfig",
               detect_key="d_model", word_embeddings="model/transformer/word_embedding/lookup_table")

LAYOUTS = collections.OrderedDict((layout.name, layout) for layout in (BERT, ALBERT, XLNET))


def descriptor(layout):
    """The Layout of a name or of a config (anything with ``.layout``); unknown names are a one-line error."""
    name = getattr(layout, "layout", layout)
    if name not in LAYOUTS:
        raise UserError("unknown encoder layout %r (known: %s)" % (name, ", ".join(LAYOUTS)))
    return LAYOUTS[name]


def detect(raw):
    """The layout a published JSON config (a dict) describes when it does not say: by a key only that layout's
    configs have, else bert."""
    return next((layout.name for layout in LAYOUTS.values() if layout.detect_key and layout.detect_key in raw),
                BERT.name)


def encoder_module(layout):
    """The modeling module that builds ``layout``'s encoder (imported on first use: it imports TensorFlow)."""
    return importlib.import_module("tf_mrc.modeling." + descriptor(layout).module)


def check_max_seq_length(config, max_seq_length):
    """A one-line error when ``max_seq_length`` exceeds what the layout's position embeddings can address."""
    if descriptor(config).absolute_positions and max_seq_length > config.max_position_embeddings:
        raise UserError("--max_seq_length %d exceeds the model's %d position embeddings"
                        % (max_seq_length, config.max_position_embeddings))


def check_recompute(config):
    """A one-line error when --recompute is asked of a layout that does not support it."""
    layout = descriptor(config)
    if not layout.recompute:
        raise UserError("--recompute supports the %s layouts, not %s"
                        % (" and ".join(name for name, other in LAYOUTS.items() if other.recompute), layout.name))
