"""Model presets (the reference table's encoders) and their per-task fine-tuning hyperparameters.

Precedence, lowest to highest: the preset, a ``--config_file`` (the checkpoint's own JSON), explicit flags.
"""
import dataclasses

from tf_mrc.modeling.config import ConfigError, ModelConfig, model_config

# name: (layout, L, H, A, E, max_len, extra ModelConfig fields)
_MODELS = {
    "google_bert_base": ("bert", 12, 768, 12, None, 512, {}),
    "sibert_base": ("bert", 12, 768, 12, None, 512, {}),
    "sialbert_middle": ("albert", 16, 1024, 16, 128, 512, {}),
    "bert_wwm_ext_base": ("bert", 12, 768, 12, None, 512, {}),
    "roberta_wwm_ext_base": ("bert", 12, 768, 12, None, 512, {}),
    "roberta_wwm_ext_large": ("bert", 24, 1024, 16, None, 512, {}),
    "ernie_1.0": ("bert", 12, 768, 12, None, 512, {"vocab_size": 18000, "type_vocab_size": 2}),
    "macbert_base": ("bert", 12, 768, 12, None, 512, {}),
    "xlnet_mid": ("xlnet", 24, 768, 12, None, 512, {"vocab_size": 32000, "d_head": 64, "untie_r": True,
                                                     "hidden_dropout_prob": 0.1,
                                                     "attention_probs_dropout_prob": 0.1}),
    "brightmart_roberta_middle": ("bert", 24, 768, 12, None, 512, {}),
    "brightmart_roberta_large": ("bert", 24, 1024, 16, None, 256, {}),
    "brightmart_albert_large": ("albert", 24, 1024, 16, 128, 512,
                                {"albert_variant": "brightmart", "hidden_dropout_prob": 0.0,
                                 "attention_probs_dropout_prob": 0.0}),
    "brightmart_albert_xlarge": ("albert", 24, 2048, 32, 128, 512,
                                 {"albert_variant": "brightmart", "hidden_dropout_prob": 0.0,
                                  "attention_probs_dropout_prob": 0.0}),
    "google_albert_xxlarge": ("albert", 12, 4096, 16, 128, 512,
                              {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}),
    # The embedded default: small enough to train from scratch on the shipped passages in seconds. Tiny presets
    # take vocab_size from the tokenizer (0 here): the shipped vocab.txt, or the --spm_model for tiny_xlnet, the
    # XLNet layout at the same scale (tests; no published checkpoint). XLNet has no LayerNorm after its
    # embedding lookup, so from scratch at 0.02 the token signal starts tiny: tiny_xlnet initialises at 0.1 and
    # drops no units, which lets it fit the shipped passages in its 30 epochs (README: "Measured behind the code").
    "tiny": ("bert", 2, 64, 2, None, 128, {"vocab_size": 0, "intermediate_size": 128,
                                            "max_position_embeddings": 128}),
    # Trained from scratch by bench/equivalence.py on real CMRC 2018 data: deeper and wider than `tiny` (question-
    # passage matching needs more than 2 layers of H 64) yet cheap enough to train for minutes on a 2-core CPU.
    "small": ("bert", 4, 128, 4, None, 512, {"vocab_size": 0}),
    "tiny_xlnet": ("xlnet", 2, 64, 2, None, 128, {"vocab_size": 0, "d_head": 32, "intermediate_size": 128,
                                                   "initializer_range": 0.1, "hidden_dropout_prob": 0.0,
                                                   "attention_probs_dropout_prob": 0.0}),
}

# The fine-tuning hyperparameters a preset supplies. train_batch_size is the GLOBAL batch (over all workers and
# accumulated micro-batches), as the published tables mean it; grad_accum_steps is the default split of it
# into micro-batches (a memory choice the user may override).
DEFAULT_HPARAMS = {"num_train_epochs": 2.0, "train_batch_size": 32, "learning_rate": 3e-5,
                   "warmup_proportion": 0.1, "weight_decay": 0.01, "grad_accum_steps": 1}

_TINY_HPARAMS = {"num_train_epochs": 30.0, "train_batch_size": 8, "learning_rate": 1e-3, "warmup_proportion": 0.1,
                 "grad_accum_steps": 1}

# Exceptions to DEFAULT_HPARAMS, lowest precedence first: (None, task) for every model on a task, (model, None)
# for a model on every task, (model, task). CHID's and C3's come from the reference fine-tuning code (it used
# them for every model); the rest from the published tables.
_HPARAMS = {
    (None, "chid"): {"num_train_epochs": 3.0, "learning_rate": 2e-5, "warmup_proportion": 0.06},
    (None, "c3"): {"num_train_epochs": 8.0, "train_batch_size": 16, "grad_accum_steps": 4, "learning_rate": 2e-5,
                   "warmup_proportion": 0.05},
    ("roberta_wwm_ext_large", "cmrc2018"): {"train_batch_size": 12, "learning_rate": 2e-5},
    ("roberta_wwm_ext_large", "drcd"): {"learning_rate": 2.5e-5},
    ("brightmart_albert_large", "cmrc2018"): {"num_train_epochs": 3.0, "learning_rate": 2e-5,
                                              "warmup_proportion": 0.05},
    ("brightmart_albert_large", "drcd"): {"num_train_epochs": 3.0, "learning_rate": 2e-5,
                                          "warmup_proportion": 0.05},
    ("brightmart_albert_xlarge", "cmrc2018"): {"num_train_epochs": 3.0, "learning_rate": 2e-5},
    ("brightmart_albert_xlarge", "drcd"): {"num_train_epochs": 3.0, "learning_rate": 2.5e-5,
                                           "warmup_proportion": 0.06},
    ("brightmart_albert_xlarge", "cjrc"): {"learning_rate": 2.5e-5, "warmup_proportion": 0.05},
    ("tiny", None): _TINY_HPARAMS,
    ("tiny_xlnet", None): _TINY_HPARAMS,
    ("small", None): {"num_train_epochs": 1.0, "train_batch_size": 16, "learning_rate": 5e-4,
                      "warmup_proportion": 0.1},
}

MODEL_NAMES = tuple(sorted(_MODELS))
ARCHITECTURE_FIELDS = ("layout", "num_hidden_layers", "hidden_size", "num_attention_heads")


@dataclasses.dataclass
class Preset:
    name: str
    config: ModelConfig
    max_seq_length: int      # the longest input the preset's model was trained for


def model_preset(name):
    if name not in _MODELS:
        raise ConfigError("unknown --model %r; presets: %s" % (name, ", ".join(MODEL_NAMES)))
    layout, layers, hidden, heads, embedding, max_len, extra = _MODELS[name]
    fields = {"layout": layout, "num_hidden_layers": layers, "hidden_size": hidden, "num_attention_heads": heads,
              "intermediate_size": 4 * hidden, "embedding_size": embedding}
    fields.update(extra)
    return Preset(name, model_config(**fields), max_len)


def hyperparameters(model, task):
    """The reference fine-tuning hyperparameters for (model, task); the window length comes from the task
    (``Task.default_max_seq_length``: CHID 64, the others 512) capped by the model."""
    values = dict(DEFAULT_HPARAMS)
    values.update(_HPARAMS.get((None, task), {}))
    values.update(_HPARAMS.get((model, None), {}))
    values.update(_HPARAMS.get((model, task), {}))
    return values


def check_config_matches_preset(preset, config, config_file):
    """A --config_file must describe the preset's architecture; a mismatch is almost always the wrong file."""
    expected = preset.config
    for field in ARCHITECTURE_FIELDS:
        if getattr(expected, field) != getattr(config, field):
            fitting = [name for name in MODEL_NAMES if all(
                getattr(model_preset(name).config, f) == getattr(config, f) for f in ARCHITECTURE_FIELDS)]
            raise ConfigError("--config_file %s has %s=%r but --model=%s expects %r (presets of this architecture: "
                              "%s)" % (config_file, field, getattr(config, field), preset.name,
                                       getattr(expected, field), ", ".join(fitting) or "none"))
