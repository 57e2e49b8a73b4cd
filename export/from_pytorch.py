"""PyTorch weights -> a TF checkpoint under the published variable names, and its TF-style config.

    python -m export.from_pytorch --pytorch PATH --config CONFIG --output CKPT_PREFIX \
        [--layout bert|albert|xlnet] [--albert_variant google|brightmart] [--config_out FILE]

PATH: ``pytorch_model.bin``, ``model.safetensors`` (or a sharded ``*.index.json``), or a directory holding one.
CONFIG: the model's config.json. Its "gelu" (BERT's hidden_act, XLNet's ff_activation) is read the way PyTorch
computed it (the exact erf form) unless the file says ``gelu_convention``; the written config (default
``CKPT_PREFIX.config.json``; XLNet's own keys for XLNet) names the activation unambiguously, so
``run_finetune.py --init_checkpoint CKPT_PREFIX --config_file CKPT_PREFIX.config.json`` computes what the PyTorch
model computed.
"""
import argparse
import json
import os

import numpy as np

from tf_mrc import outputs
from tf_mrc.errors import UserError, first_line, one_line_errors
from tf_mrc.modeling.layouts import LAYOUTS
from export.mapping import ACTIVATION_WORDS, ConversionError, check_fixed_settings, heads_in, tf_config_dict, \
    torch_to_tf, variant_of

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


def require_torch():
    """The torch module, or a one-line error: only the PyTorch side of the conversion needs it."""
    try:
        import torch
    except ImportError:
        raise UserError("reading or writing PyTorch weights needs torch (pip install torch safetensors)")
    return torch


def _load_one(path):
    torch = require_torch()
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file
            return load_file(path)
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ConversionError("PyTorch weights not found: %s" % path)
    except Exception as err:  # unpickling / safetensors header errors: the file is not a state dict we can read
        raise ConversionError("cannot read PyTorch weights %s: %s" % (path, first_line(err)))
    for key in ("state_dict", "model"):  # training checkpoints that wrap the state dict
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
    if not isinstance(loaded, dict):
        raise ConversionError("%s does not hold a state dict (found %s)" % (path, type(loaded).__name__))
    return loaded


def load_torch_state(path):
    """({name: ndarray}, notes) from a weights file, a sharded index or a directory holding one."""
    torch = require_torch()
    if os.path.isdir(path):
        found = [name for name in WEIGHT_FILES if os.path.isfile(os.path.join(path, name))]
        if not found:
            raise ConversionError("no %s in %s" % (" / ".join(WEIGHT_FILES), path))
        path = os.path.join(path, found[0])
    if path.endswith(".index.json"):
        try:
            with open(path, encoding="utf-8") as f:
                shards = sorted(set(json.load(f)["weight_map"].values()))
        except (OSError, ValueError, KeyError, AttributeError) as err:
            raise ConversionError("cannot read shard index %s: %s" % (path, first_line(err)))
        tensors = {}
        for shard in shards:
            tensors.update(_load_one(os.path.join(os.path.dirname(path), shard)))
    else:
        tensors = _load_one(path)
    not_tensors = sorted(name for name, value in tensors.items() if not isinstance(value, torch.Tensor))
    if not_tensors:
        raise ConversionError("%s: entries that are not tensors: %s" % (path, ", ".join(not_tensors[:8])))
    state, cast = {}, 0
    for name, tensor in tensors.items():
        if tensor.dtype in (torch.float16, torch.bfloat16):
            tensor, cast = tensor.float(), cast + 1
        state[name] = tensor.detach().cpu().numpy()
    notes = ["cast %d float16/bfloat16 tensors to float32 (TF variables are float32)" % cast] if cast else []
    return state, notes


def read_config(path, layout=None, albert_variant=None):
    """The ModelConfig of a PyTorch model's config file: "gelu" means the erf form unless the file says otherwise."""
    from tf_mrc.modeling.config import config_from_json
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except (OSError, ValueError):
        raw = None  # config_from_json reports the problem in one line
    config = config_from_json(path, layout=layout, albert_variant=albert_variant,
                              gelu_convention=None if isinstance(raw, dict) and "gelu_convention" in raw else "hf")
    check_fixed_settings(raw, path, config)
    return config


def write_tf_checkpoint(values, prefix):
    """Save {name: ndarray} as a TF checkpoint (tf.train.Saver format, no meta graph) at ``prefix``."""
    from tf_mrc.compat import tf
    outputs.make_writable_directory(os.path.dirname(os.path.abspath(prefix)), "the directory of %s" % prefix)
    with tf.Graph().as_default():
        variables, feeds = {}, {}
        for name, value in sorted(values.items()):
            value = np.asarray(value)
            placeholder = tf.placeholder(tf.as_dtype(value.dtype), value.shape)
            variables[name] = tf.Variable(placeholder, name=name.replace("/", "__"), trainable=False)
            feeds[placeholder] = value
        saver = tf.train.Saver(var_list=variables)
        with tf.Session() as sess:
            sess.run([v.initializer for v in variables.values()], feed_dict=feeds)
            saver.save(sess, prefix, write_meta_graph=False, write_state=False)


def convert(pytorch_path, config_path, output, layout=None, albert_variant=None, config_out=None, log=print):
    """The whole command; returns (checkpoint prefix, config path)."""
    state, notes = load_torch_state(pytorch_path)
    if albert_variant is None and any(".layer_shared." in n or "word_embeddings_2" in n for n in state):
        albert_variant = "brightmart"
    config = read_config(config_path, layout, albert_variant)
    values, more_notes = torch_to_tf(state, config)
    # A step counter of 0, as a checkpoint written by training has: Estimator restores it when predicting
    # straight from this checkpoint (run_finetune.py --do_predict --init_checkpoint without --do_train).
    write_tf_checkpoint(dict(values, global_step=np.int64(0)), output)
    config_out = config_out or output + ".config.json"
    outputs.write_json(config_out, tf_config_dict(config), indent=2, sort_keys=True)
    for note in notes + more_notes:
        log("note: " + note)
    heads = heads_in(values)
    log("wrote %d variables (%s%s, heads: %s, activation %s) to %s and %s" % (
        len(values), config.layout, "/" + variant_of(config) if variant_of(config) != config.layout else "",
        ", ".join(heads) or "none", ACTIVATION_WORDS[config.activation()][0], output, config_out))
    return output, config_out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pytorch", required=True, help="pytorch_model.bin, model.safetensors, an index or a dir")
    parser.add_argument("--config", required=True, help="the model's config.json")
    parser.add_argument("--output", required=True, help="checkpoint prefix to write, e.g. out/bert_model.ckpt")
    parser.add_argument("--layout", choices=list(LAYOUTS), help="default: from the config")
    parser.add_argument("--albert_variant", choices=["google", "brightmart"],
                        help="default: brightmart when the weights have layer_shared / word_embeddings_2")
    parser.add_argument("--config_out", help="default: CKPT_PREFIX.config.json")
    args = parser.parse_args(argv)
    with one_line_errors():
        convert(args.pytorch, args.config, args.output, args.layout, args.albert_variant, args.config_out)


if __name__ == "__main__":
    main()
