"""``--init_checkpoint`` as users hold their weights: a TF checkpoint prefix, or a transformers model directory.

A transformers directory (``config.json`` beside ``model.safetensors`` / ``pytorch_model.bin`` or a sharded index,
plus ``vocab.txt`` or XLNet's ``spiece.model``), or one weights file beside its ``config.json``, is converted once
by ``export.from_pytorch`` into a TF checkpoint under the published variable names. The result is cached under
``$TF_MRC_HOME/converted/<content hash>/`` (default ``~/.cache/tf_mrc``), keyed by the bytes of the weights and
the config, so every later run and every Horovod rank reads the same converted files.

A directory of TF checkpoints is read as published releases lay it out (google-research/bert's
``chinese_L-12_H-768_A-12/``, ymcui's and brightmart's zips: ``bert_model.ckpt.*`` with no ``checkpoint`` state
file, ``bert_config.json`` / ``albert_config*.json`` / ``xlnet_config.json``, ``vocab.txt`` / ``vocab_chinese.txt``
/ ``spiece.model``): its checkpoint, and its config and vocabulary as the defaults of the flags left unset.
"""
import collections
import hashlib
import os
import re
import shutil
import tempfile

from tf_mrc import cache_dir
from tf_mrc.errors import UserError

CONFIG_NAME = "config.json"
VOCAB_NAMES = {"vocab_file": "vocab.txt", "spm_model": "spiece.model"}
# A TF release directory's files, as the published zips name them.
RELEASE_CONFIG = re.compile(r"^(bert_config|albert_config(_\w+)?|xlnet_config)\.json$")
RELEASE_VOCABS = {"vocab_file": ("vocab.txt", "vocab_chinese.txt"), "spm_model": ("spiece.model",)}

Converted = collections.namedtuple("Converted", ["checkpoint", "config_file", "vocab_file", "spm_model", "source"])


def transformers_source(path):
    """(model directory, weights path) when ``path`` names transformers-format weights, else None."""
    from export.from_pytorch import WEIGHT_FILES
    if not path:
        return None
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, CONFIG_NAME)):
            return None  # a directory of TF checkpoints (its latest is meant)
        weights = [name for name in WEIGHT_FILES if os.path.isfile(os.path.join(path, name))]
        if not weights:
            raise UserError("--init_checkpoint %s holds %s but no weights (%s)"
                            % (path, CONFIG_NAME, " / ".join(WEIGHT_FILES)))
        return path, os.path.join(path, weights[0])
    if path.endswith((".bin", ".safetensors", ".index.json")) and os.path.isfile(path):
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isfile(os.path.join(directory, CONFIG_NAME)):
            raise UserError("--init_checkpoint %s: no %s beside the weights" % (path, CONFIG_NAME))
        return directory, path
    return None


def _weight_files(weights):
    """Every file the weights consist of (the shards of a sharded index too)."""
    if not weights.endswith(".index.json"):
        return [weights]
    import json
    try:
        with open(weights, encoding="utf-8") as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
    except (OSError, ValueError, KeyError, AttributeError) as err:
        raise UserError("cannot read shard index %s: %s" % (weights, err))
    return [weights] + [os.path.join(os.path.dirname(weights), shard) for shard in shards]


def _content_key(paths):
    from tf_mrc.tokenization import file_fingerprint
    digest = hashlib.sha1()
    for path in paths:
        if not os.path.isfile(path):
            raise UserError("weights file not found: %s" % path)
        digest.update(file_fingerprint(path).encode())
    return digest.hexdigest()[:16]


def convert_cached(path, convert=True, log=print):
    """The converted checkpoint for transformers-format ``path`` (None for anything else). With ``convert``
    False (a Horovod rank other than 0, after rank 0 converted) a missing cache entry is an error, not work."""
    source = transformers_source(path)
    if source is None:
        return None
    directory, weights = source
    config_path = os.path.join(directory, CONFIG_NAME)
    target = os.path.join(cache_dir("converted"), _content_key([config_path] + _weight_files(weights)))
    checkpoint = os.path.join(target, "model.ckpt")
    if not os.path.isfile(checkpoint + ".index"):
        if not convert:
            raise UserError("the converted checkpoint of %s is missing from %s" % (path, target))
        _convert_into(target, weights, config_path, log)
        log("[init] converted %s -> %s (cached by content; later runs reuse it)" % (weights, checkpoint))
    else:
        log("[init] %s: using the cached conversion %s" % (weights, checkpoint))
    found = {flag: os.path.join(directory, name) for flag, name in VOCAB_NAMES.items()}
    found = {flag: p if os.path.isfile(p) else None for flag, p in found.items()}
    return Converted(checkpoint, checkpoint + ".config.json", found["vocab_file"], found["spm_model"], directory)


def _convert_into(target, weights, config_path, log):
    """Convert into a private directory, then rename it into place: a killed conversion leaves nothing behind
    that a later run would mistake for a finished one."""
    from export import from_pytorch
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    work = tempfile.mkdtemp(prefix=".converting-", dir=parent)
    try:
        from_pytorch.convert(weights, config_path, os.path.join(work, "model.ckpt"),
                             log=lambda line: log("[init] " + line))
        try:
            os.rename(work, target)
        except OSError:
            if not os.path.isfile(os.path.join(target, "model.ckpt.index")):  # not another process's result
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def unset_defaults(converted, current):
    """{flag: value} of the directory's config and vocabulary for the flags ``current(flag)`` leaves unset
    (flags in RunSpec's names: config_file, vocab_file, spm_model); explicit flags win."""
    offered = {"config_file": converted.config_file, "vocab_file": converted.vocab_file,
               "spm_model": converted.spm_model}
    return {flag: value for flag, value in offered.items() if value is not None and current(flag) is None}


def with_converted_checkpoint(spec, converted, log=print):
    """``spec`` (a RunSpec) reading the converted checkpoint, with the directory's config and vocabulary as the
    defaults of --config_file / --vocab_file / --spm_model."""
    import dataclasses
    changes = unset_defaults(converted, lambda flag: getattr(spec, flag))
    for flag, value in changes.items():
        log("[init] --%s defaults to %s" % (flag, value))
    return dataclasses.replace(spec, init_checkpoint=converted.checkpoint, **changes)


def release_directory(path, flag="--init_checkpoint"):
    """``path`` as a directory of TF checkpoints: its checkpoint, and the config / vocabulary files a published
    release puts beside it (Converted; None when ``path`` is not a directory). ``flag`` names it in errors."""
    from tf_mrc.modeling.checkpoint import checkpoint_in_directory
    if not path or not os.path.isdir(path):
        return None
    checkpoint = checkpoint_in_directory(path)
    if checkpoint is None:
        raise UserError("%s %s holds no checkpoint (no *.index file) and no %s: pass a checkpoint prefix or a "
                        "model directory" % (flag, path, CONFIG_NAME))
    names = sorted(os.listdir(path))
    configs = [name for name in names if RELEASE_CONFIG.match(name)] or \
        [name for name in names if name == os.path.basename(checkpoint) + ".config.json"]
    found = {flag: next((os.path.join(path, n) for n in choices if n in names), None)
             for flag, choices in RELEASE_VOCABS.items()}
    return Converted(checkpoint, os.path.join(path, configs[0]) if len(configs) == 1 else None,
                     found["vocab_file"], found["spm_model"], path)


def resolve_init_checkpoint(spec, dist, log=print):
    """``spec`` with --init_checkpoint as a checkpoint prefix: a transformers-format one replaced by its converted
    checkpoint (rank 0 converts; the other ranks wait, then read the same cache entry), a directory of TF
    checkpoints by the checkpoint in it; either's config and vocabulary become the defaults of unset flags."""
    if transformers_source(spec.init_checkpoint) is None:
        release = release_directory(spec.init_checkpoint)
        return with_converted_checkpoint(spec, release, log if dist.is_chief else (lambda line: None)) \
            if release else spec
    converted = convert_cached(spec.init_checkpoint, log=log) if dist.is_chief else None
    dist.barrier("converted-checkpoint")
    if not dist.is_chief:
        converted = convert_cached(spec.init_checkpoint, convert=False, log=lambda line: None)
    return with_converted_checkpoint(spec, converted, log if dist.is_chief else (lambda line: None))
