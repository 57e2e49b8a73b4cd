"""One descriptor per encoder layout: everything outside the encoder module that differs between layouts.

Code that needs a layout-dependent answer asks ``descriptor(config)`` (or ``descriptor(name)``) instead of
comparing layout names. A new encoder is one module under tf_mrc/modeling with ``encode`` (see
tf_mrc.modeling.build_encoder), one Layout here, its name rules in export.mapping, and tests.
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
])

BERT = Layout(name="bert", module="bert", tokenizer="wordpiece", vocabulary_flag="vocab_file", lower_case=True,
              padding="right", passage_first=False, absolute_positions=True, pooled_scope="bert/pooler/",
              pooled_name="pooler", pretrained_pooled=True, span_head="linear", recompute=True, published_keys=())
ALBERT = BERT._replace(name="albert", module="albert")
XLNET = Layout(name="xlnet", module="xlnet", tokenizer="sentencepiece", vocabulary_flag="spm_model",
               lower_case=False, padding="left", passage_first=True, absolute_positions=False,
               pooled_scope="model/sequnece_summary/",  # sic: zihangdai/xlnet's spelling of the published scope
               pooled_name="sequence summary", pretrained_pooled=False, span_head="xlnet", recompute=False,
               published_keys=(("d_model", "hidden_size"), ("n_layer", "num_hidden_layers"),
                               ("n_head", "num_attention_heads"), ("d_inner", "intermediate_size"),
                               ("ff_activation", "hidden_act"), ("n_token", "vocab_size"), ("d_head", "d_head"),
                               ("untie_r", "untie_r"), ("clamp_len", "clamp_len")))

LAYOUTS = collections.OrderedDict((layout.name, layout) for layout in (BERT, ALBERT, XLNET))


def descriptor(layout):
    """The Layout of a name or of a config (anything with ``.layout``); unknown names are a one-line error."""
    name = getattr(layout, "layout", layout)
    if name not in LAYOUTS:
        raise UserError("unknown encoder layout %r (known: %s)" % (name, ", ".join(LAYOUTS)))
    return LAYOUTS[name]


def encoder_module(layout):
    """The modeling module that builds ``layout``'s encoder (imported on first use: it imports TensorFlow)."""
    return importlib.import_module("tf_mrc.modeling." + descriptor(layout).module)
