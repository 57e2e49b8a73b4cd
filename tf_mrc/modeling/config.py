"""Model configuration: one dataclass per layout behind one interface, read from the published JSON configs.

ModelConfig holds what every layout has (and is the BERT layout's config); AlbertConfig and XLNetConfig add their
own fields. ``model_config(**fields)`` builds the class the ``layout`` field names (its descriptor's
``config_class``), so callers never pick the class themselves.
"""
import dataclasses
import json
from typing import Optional

from tf_mrc.errors import UserError
from tf_mrc.modeling.layouts import LAYOUTS, descriptor, detect

ALBERT_VARIANTS = ("google", "brightmart")
LAYER_NORM_EPSILON = 1e-12  # tf.contrib.layers.layer_norm's, which every published BERT/ALBERT checkpoint used


class ConfigError(UserError):
    """A config file or preset that cannot describe a model; the message is one line for the user."""


@dataclasses.dataclass
class ModelConfig:
    layout: str = "bert"
    vocab_size: int = 21128
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"            # the config's own word; see gelu_form()
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    # How the config's "gelu" is meant: google TF code and configs mean the tanh form; transformers means erf.
    gelu_convention: str = "tf"

    # Sizes and counts (an ALBERT's embedding_size, an XLNet's d_head: when set) with their least value (a vocab_size
    # of 0 is the tiny presets' "the tokenizer's"), and dropout probabilities.
    COUNTS = dict({name: 1 for name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                                        "max_position_embeddings", "type_vocab_size", "embedding_size",
                                        "num_hidden_groups", "inner_group_num", "d_head")}, vocab_size=0)
    PROBABILITIES = ("hidden_dropout_prob", "attention_probs_dropout_prob")

    def __post_init__(self):
        if self.layout not in LAYOUTS:
            raise ConfigError("layout must be one of %s, got %r" % ("|".join(LAYOUTS), self.layout))
        if type(self).__name__ != descriptor(self).config_class:
            raise ConfigError("layout %s is configured by %s, not %s (build configs with model_config)"
                              % (self.layout, descriptor(self).config_class, type(self).__name__))
        for name, least in self.COUNTS.items():
            value = getattr(self, name, None)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < least):
                raise ConfigError("%s must be an integer >= %d, got %s" % (name, least, json.dumps(value)))
        for name in self.PROBABILITIES:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise ConfigError("%s must be a probability in [0, 1), got %s" % (name, json.dumps(value)))
        if self.hidden_size % self.num_attention_heads and getattr(self, "d_head", None) is None:
            raise ConfigError("hidden_size %d is not a multiple of num_attention_heads %d"
                              % (self.hidden_size, self.num_attention_heads))

    @property
    def head_size(self):
        return self.hidden_size // self.num_attention_heads

    def activation(self):
        """(kind, gelu_form): kind is 'gelu' | 'relu' | 'tanh' | 'swish'; gelu_form is 'tanh' | 'erf' | None."""
        act = self.hidden_act.lower()
        if act in ("gelu_new", "gelu_fast", "gelu_pytorch_tanh"):
            return "gelu", "tanh"
        if act in ("gelu_exact", "gelu_erf"):
            return "gelu", "erf"
        if act == "gelu":
            return "gelu", ("tanh" if self.gelu_convention == "tf" else "erf")
        if act in ("relu", "tanh", "swish"):
            return act, None
        raise ConfigError("unsupported hidden_act %r" % self.hidden_act)

    def to_dict(self):
        return dataclasses.asdict(self)

    def to_json_file(self, path):
        from tf_mrc import outputs
        outputs.write_json(path, self.to_dict(), indent=2, sort_keys=True)


@dataclasses.dataclass
class AlbertConfig(ModelConfig):
    """ALBERT: factorized embeddings (E != H) and cross-layer sharing, in one of two published weight layouts."""
    embedding_size: Optional[int] = None  # None: ALBERT's 128
    num_hidden_groups: int = 1
    inner_group_num: int = 1
    albert_variant: str = "google"      # google: bert/encoder/transformer/group_0/...; brightmart: albert_zh names

    def __post_init__(self):
        super().__post_init__()
        if self.albert_variant not in ALBERT_VARIANTS:
            raise ConfigError("albert_variant must be google|brightmart, got %r" % self.albert_variant)
        if self.embedding_size is None:
            self.embedding_size = 128


@dataclasses.dataclass
class XLNetConfig(ModelConfig):
    """XLNet: per-head width of its own (d_head), relative-attention biases per layer or shared, clamp_len."""
    d_head: Optional[int] = None
    untie_r: bool = True
    clamp_len: int = -1

    @property
    def head_size(self):
        return self.d_head or self.hidden_size // self.num_attention_heads


_CLASSES = (ModelConfig, AlbertConfig, XLNetConfig)


def model_config(**fields):
    """The config of ``fields["layout"]`` (default bert). Fields that belong to another layout are accepted only
    at that layout's default (presets and older run_config.json files list every field); any other field is an
    error."""
    layout = descriptor(fields.get("layout", "bert"))
    config_class = next(c for c in _CLASSES if c.__name__ == layout.config_class)
    own = {f.name for f in dataclasses.fields(config_class)}
    defaults = {f.name: f.default for c in _CLASSES for f in dataclasses.fields(c)}
    stray = sorted(name for name, value in fields.items()
                   if name not in own and (name not in defaults or value != defaults[name]))
    if stray:
        raise ConfigError("a %s config has no %s" % (layout.name, ", ".join(
            "%s=%r" % (name, fields[name]) for name in stray)))
    return config_class(**{name: value for name, value in fields.items() if name in own})


def config_from_json(path, layout=None, base=None, **overrides):
    """Read a BERT, ALBERT or XLNet JSON config (their published key names) into a ModelConfig.

    The layout comes from ``layout``, else from the file's keys (``layout``, transformers' ``model_type``,
    XLNet's d_model, ALBERT's embedding_size). A transformers config.json (it has ``model_type``) means the
    exact erf form by ``gelu`` unless it says ``gelu_convention`` itself.
    Fields the file does not set keep ``base``'s values (a preset's: e.g. brightmart's albert_variant, the
    dropout of XLNet, whose config files hold none), else the ModelConfig defaults.
    """
    try:
        with open(path, encoding="utf-8-sig") as f:  # -sig: a byte-order mark (Windows editors) is not JSON
            raw = json.load(f)
    except FileNotFoundError:
        raise ConfigError("config file not found: %s" % path)
    except OSError as err:
        raise ConfigError("config file %s cannot be read: %s" % (path, err.strerror or err))
    except UnicodeDecodeError as err:
        raise ConfigError("config file %s is not UTF-8 text: %s" % (path, err))
    except json.JSONDecodeError as err:
        raise ConfigError("config file %s is not valid JSON: %s" % (path, err))
    if not isinstance(raw, dict):
        raise ConfigError("config file %s: expected a JSON object" % path)
    if layout is None:
        layout = raw.get("layout") or (raw.get("model_type") if raw.get("model_type") in LAYOUTS else None) or \
            detect(raw)
    if raw.get("layer_norm_eps", LAYER_NORM_EPSILON) != LAYER_NORM_EPSILON:
        raise ConfigError("config file %s: layer_norm_eps %g is not supported (tf_mrc's LayerNorm uses %g, as every "
                          "published BERT/ALBERT checkpoint does)" % (path, raw["layer_norm_eps"], LAYER_NORM_EPSILON))
    config_class = next(c for c in _CLASSES if c.__name__ == descriptor(layout).config_class)
    fields = {f.name for f in dataclasses.fields(config_class)}
    values = {k: v for k, v in dataclasses.asdict(base).items() if k in fields} if base is not None else {}
    values["layout"] = layout
    if "model_type" in raw and "gelu_convention" not in raw:
        values["gelu_convention"] = "hf"
    published = dict(descriptor(layout).published_keys)
    for key, value in raw.items():
        key = published.get(key, key)
        if key in fields:
            values[key] = value
    values.update({k: v for k, v in overrides.items() if v is not None and k in fields})
    try:
        return model_config(**values)
    except (TypeError, ConfigError) as err:   # name the file whose values do not describe a model
        raise ConfigError("config file %s: %s" % (path, err))
