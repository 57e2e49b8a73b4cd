"""A TF checkpoint -> PyTorch weights and a config.json that transformers loads.

    python -m export.to_pytorch --checkpoint CKPT --config CONFIG.json --output DIR \
        [--layout bert|albert|xlnet] [--albert_variant google|brightmart] [--safetensors] \
        [--vocab_file VOCAB | --spm_model SPIECE]

Writes DIR/pytorch_model.bin (or DIR/model.safetensors) and DIR/config.json. The weights are named as the
transformers class that holds them names its own: ``BertModel`` / ``AlbertModel`` / ``XLNetModel`` without a head,
``...ForQuestionAnswering`` with the span head (``cls/squad`` -> ``qa_outputs``; XLNet's run_squad head ->
``start_logits``, ``end_logits``, ``answer_class``; those classes have no pooler / sequence summary),
``...ForMultipleChoice`` with the choice head
(``cls/multiple_choice`` -> ``classifier``; XLNet: ``logits_proj`` after ``sequence_summary.summary``).
Optimizer state and pretraining heads in the checkpoint are skipped.
"""
import argparse
import os

from tf_mrc import outputs
from tf_mrc.errors import UserError, first_line, one_line_errors
from tf_mrc.modeling.layouts import LAYOUTS
from export.from_pytorch import require_torch
from export.mapping import ConversionError, hf_config_dict, tf_to_torch


def read_tf_checkpoint(checkpoint):
    """{name: ndarray} of every variable in a checkpoint prefix (or a directory's latest checkpoint)."""
    from tf_mrc.compat import tf
    from tf_mrc.modeling.checkpoint import resolve_checkpoint
    try:
        reader = tf.train.load_checkpoint(resolve_checkpoint(checkpoint))
        return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}
    except Exception as err:  # OpErrors, or the IndexError / ValueError py_checkpoint_reader turns them into
        raise ConversionError("checkpoint %s cannot be read: %s" % (checkpoint, first_line(err)))


def write_torch_state(state, directory, use_safetensors=False):
    """Save {name: ndarray} as DIR/pytorch_model.bin (torch.save) or DIR/model.safetensors; returns the path."""
    torch = require_torch()
    tensors = {name: torch.from_numpy(value) for name, value in state.items()}
    if use_safetensors:
        from safetensors.torch import save
        path = os.path.join(directory, "model.safetensors")
        outputs.write_bytes(path, save(tensors, metadata={"format": "pt"}))
    else:
        path = os.path.join(directory, "pytorch_model.bin")
        with outputs.atomic_open(path, "wb") as f:
            torch.save(tensors, f)
    return path


def convert(checkpoint, config_path, output, layout=None, albert_variant=None, use_safetensors=False,
            vocab_file=None, spm_model=None, log=print):
    """The whole command; returns (weights path, transformers class name or None)."""
    from tf_mrc.modeling.config import config_from_json
    config = config_from_json(config_path, layout=layout, albert_variant=albert_variant)
    for flag, source in (("--vocab_file", vocab_file), ("--spm_model", spm_model)):
        if source and not os.path.isfile(source):
            raise UserError("%s %s: not a file" % (flag, source))
    state, target, notes = tf_to_torch(read_tf_checkpoint(checkpoint), config)
    outputs.make_writable_directory(output, "--output %s" % output)
    path = write_torch_state(state, output, use_safetensors)
    outputs.write_json(os.path.join(output, "config.json"), hf_config_dict(config, target), indent=2, sort_keys=True)
    for source, name in ((vocab_file, "vocab.txt"), (spm_model, "spiece.model")):  # the tokenizers' file names
        if source:
            outputs.copy_file(source, os.path.join(output, name))
    for note in notes:
        log("note: " + note)
    log("wrote %d tensors (%s) to %s and config.json" % (len(state), target or "no transformers class", path))
    return path, target


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="checkpoint prefix, or a directory (its latest)")
    parser.add_argument("--config", required=True, help="the checkpoint's TF-style JSON config")
    parser.add_argument("--output", required=True, help="directory for the weights and config.json")
    parser.add_argument("--layout", choices=list(LAYOUTS), help="default: from the config")
    parser.add_argument("--albert_variant", choices=["google", "brightmart"], help="default: from the config")
    parser.add_argument("--safetensors", action="store_true", help="write model.safetensors, not pytorch_model.bin")
    parser.add_argument("--vocab_file", help="copied to DIR/vocab.txt")
    parser.add_argument("--spm_model", help="XLNet's SentencePiece model, copied to DIR/spiece.model")
    args = parser.parse_args(argv)
    with one_line_errors():
        convert(args.checkpoint, args.config, args.output, args.layout, args.albert_variant, args.safetensors,
                args.vocab_file, args.spm_model)


if __name__ == "__main__":
    main()
