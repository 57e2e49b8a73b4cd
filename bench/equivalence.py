"""Does tf_mrc learn as transformers does from the same start? Measured on real CMRC 2018 data.

    python bench/equivalence.py [--train_file F] [--dev_file F] [--precision bf16] [--pytorch DIR]

One BERT is built in transformers (random, seeded; or ``--pytorch`` weights) and converted with
export.from_pytorch, so both frameworks start from the same weights. tf_mrc's featurizer makes the windows
both sides train and predict on.
(a) trajectory: dropout 0, the same batches in the same order, and on the torch side google's AdamWeightDecay
    (no bias correction, decoupled decay, LayerNorm/bias excluded), warmup + linear decay and global-norm
    clipping written out below: the per-step losses must agree.
(b) outcome: each framework's own recipe with the same hyperparameters and dropout 0.1 (tf_mrc: experiment.run,
    as run_finetune.py; transformers: BertForQuestionAnswering, torch AdamW, a linear warmup schedule, shuffled
    epochs), seeds ``--seeds``; dev F1/EM with the official metric, the transformers logits decoded by tf_mrc's
    postprocess, so training is the only difference; the untrained model through the same decoding.
(c) ``--precision bf16`` adds tf_mrc bf16 to both parts (loss curve against fp32, dev F1 against the seed noise).
Prints a table; the last line is JSON.
"""
import argparse
import dataclasses
import json
import math
import os
import sys
import time

# torch's OpenMP workers spin while they wait for each other; on a CPU shared with other jobs they spin on cores
# the other workers need, and a training step takes many times longer. Passive waiting must be set before torch
# loads its OpenMP runtime.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from export import from_pytorch  # noqa: E402
from tf_mrc import experiment, presets  # noqa: E402
from tf_mrc.compat import tf  # noqa: E402
from tf_mrc.distributed import SingleProcess  # noqa: E402
from tf_mrc.errors import UserError, fail  # noqa: E402
from tf_mrc.estimator import make_estimator, model_fn_builder  # noqa: E402
from tf_mrc.modeling.config import config_from_json  # noqa: E402
from tf_mrc.tasks import FeatureSettings, get_task  # noqa: E402
from tf_mrc.tokenization import load_tokenizer  # noqa: E402

SHARED_DATA = os.environ.get("TF_MRC_SHARED_DATA", os.path.join(os.path.dirname(ROOT), "shared", "data"))
NO_DECAY = ("LayerNorm", "bias")  # transformers' names for what tf_mrc.training.NO_DECAY excludes
WEIGHT_DECAY = 0.01  # what tf_mrc's run_finetune path trains with (tf_mrc.training.create_train_op)
TRAJECTORY_TARGET = 1e-3
# bf16 keeps 8 mantissa bits (relative rounding 2^-9 per operation). The tolerance bounds the median over steps:
# a loss spike amplifies any perturbation for a few steps, and the maximum is reported beside it.
BF16_TOLERANCE = 0.005


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    data = os.path.join(SHARED_DATA, "cmrc2018")
    parser.add_argument("--train_file", default=os.path.join(data, "cmrc2018_train.json"))
    parser.add_argument("--dev_file", default=os.path.join(data, "cmrc2018_trial.json"),
                        help="any CMRC-format file; default: the official trial set (a file apart from the "
                             "training file, with several human answers per question like the official dev set)")
    parser.add_argument("--vocab_file", default=os.path.join(SHARED_DATA, "vocab", "chinese_bert_vocab.txt"),
                        help="WordPiece vocabulary; restricted to the pieces the train and dev files use")
    parser.add_argument("--work_dir", default="/tmp/tf_mrc_equivalence")
    parser.add_argument("--pytorch", help="transformers BertForQuestionAnswering weights directory to start from "
                                          "(config.json + weights; its own vocabulary via --vocab_file; --model "
                                          "the preset of the same shape)")
    parser.add_argument("--model", default="small", help="tf_mrc preset: the random model's shape, and the preset "
                                                         "tf_mrc's run checks the converted config against")
    parser.add_argument("--train_questions", type=int, default=1500, help="questions taken from the train file "
                                                                          "(whole passages, seeded order)")
    parser.add_argument("--dev_questions", type=int, default=500, help="first N dev questions (0: all)")
    parser.add_argument("--max_seq_length", type=int, default=128)
    parser.add_argument("--doc_stride", type=int, default=64)
    parser.add_argument("--max_query_length", type=int, default=64)
    parser.add_argument("--learning_rate", type=float, default=5e-4)
    parser.add_argument("--train_batch_size", type=int, default=16)
    parser.add_argument("--num_train_epochs", type=float, default=1.0)
    parser.add_argument("--warmup_proportion", type=float, default=0.1)
    parser.add_argument("--seeds", type=int, default=2, help="outcome seeds per framework (0: trajectory only)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--trajectory_steps", type=int, default=50)
    parser.add_argument("--trajectory_batch_size", type=int, default=8)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                        help="bf16: also train tf_mrc in bf16 in both parts and compare with its fp32")
    parser.add_argument("--bf16_tolerance", type=float, default=BF16_TOLERANCE,
                        help="largest median (over steps) relative difference of the bf16 loss curve from "
                             "fp32's that passes")
    args = parser.parse_args(argv)
    for flag in ("train_file", "dev_file", "vocab_file"):
        if not os.path.isfile(getattr(args, flag)):
            raise UserError("--%s %s not found" % (flag, getattr(args, flag)))
    return args


def log(message):
    print(message, flush=True)


# -------------------------------------------------------------------------------------------------------------
# Data: a slice of the training file, a vocabulary restricted to the pieces the data uses, the features.

def write_train_slice(path, questions, seed, out_path):
    """Whole passages of ``path`` in a seeded order until ``questions`` questions, as a CMRC-format file."""
    with open(path, encoding="utf-8") as f:
        dataset = json.load(f)
    units = [(a_index, p_index) for a_index, article in enumerate(dataset["data"])
             for p_index in range(len(article["paragraphs"]))]
    order = np.random.RandomState(seed).permutation(len(units))
    articles, taken = [], 0
    for index in order:
        if taken >= questions:
            break
        a_index, p_index = units[index]
        paragraph = dataset["data"][a_index]["paragraphs"][p_index]
        articles.append({"id": dataset["data"][a_index].get("id", str(a_index)), "paragraphs": [paragraph]})
        taken += len(paragraph["qas"])
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump({"version": dataset.get("version", ""), "data": articles}, f, ensure_ascii=False)
    return out_path, taken


def write_dev_slice(path, questions, out_path):
    """The first ``questions`` questions of ``path`` (all when 0), as a CMRC-format file."""
    if not questions:
        return path
    with open(path, encoding="utf-8") as f:
        dataset = json.load(f)
    articles, taken = [], 0
    for article in dataset["data"]:
        paragraphs = []
        for paragraph in article["paragraphs"]:
            if taken < questions:
                qas = paragraph["qas"][:questions - taken]
                paragraphs.append(dict(paragraph, qas=qas))
                taken += len(qas)
        if paragraphs:
            articles.append(dict(article, paragraphs=paragraphs))
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump({"data": articles}, f, ensure_ascii=False)
    return out_path


def write_data_vocab(vocab_file, data_files, out_path):
    """The entries of ``vocab_file`` that tokenizing the data files produces, plus the special tokens, in the
    file's order. WordPiece's longest match over this subset yields the same pieces as over the whole
    vocabulary, so the text tokenizes identically with a smaller (on Chinese: mostly character) embedding."""
    tokenizer = load_tokenizer("bert", vocab_file)
    task = get_task("cmrc2018")
    texts = set()
    for path in data_files:
        for example in task.read_examples(path, False):
            texts.update((example.question, example.context))
    used = set()
    for text in texts:
        used.update(tokenizer.encode(text)[0])
    keep = [token for index, token in enumerate(tokenizer.vocab)
            if index in used or (token.startswith("[") and token.endswith("]") and not token.startswith("[unused"))]
    with open(out_path, "w", encoding="utf-8") as f:
        f.write("\n".join(keep) + "\n")
    return out_path


@dataclasses.dataclass
class Features:
    examples: list
    arrays: dict      # name -> np.ndarray [N, ...]
    sidecar: list


def featurize(path, tokenizer, settings, is_training):
    task = get_task("cmrc2018")
    examples = task.read_examples(path, is_training)
    featurized = task.featurize(examples, tokenizer, settings, is_training)
    arrays = {name: np.asarray([feature[name] for feature in featurized.arrays], dtype=np.int32)
              for name in featurized.arrays[0]}
    return Features(examples, arrays, featurized.sidecar)


# -------------------------------------------------------------------------------------------------------------
# The shared start: a transformers BertForQuestionAnswering, converted to a TF checkpoint.

def transformers_start(args, vocab_size, out_dir):
    """(PyTorch weights directory, TF checkpoint prefix, TF config path). Random weights are transformers'
    own initialisation under ``args.seed``, shaped like the tf_mrc preset ``args.model``."""
    if args.pytorch:
        source = args.pytorch
    else:
        shape = presets.model_preset(args.model).config
        config = transformers.BertConfig(
            vocab_size=vocab_size, hidden_size=shape.hidden_size, num_hidden_layers=shape.num_hidden_layers,
            num_attention_heads=shape.num_attention_heads, intermediate_size=shape.intermediate_size,
            max_position_embeddings=shape.max_position_embeddings, type_vocab_size=shape.type_vocab_size,
            hidden_act="gelu", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
            initializer_range=shape.initializer_range)
        torch.manual_seed(args.seed)
        model = transformers.BertForQuestionAnswering(config)
        source = os.path.join(out_dir, "pytorch")
        model.save_pretrained(source)
    prefix, tf_config = from_pytorch.convert(source, os.path.join(source, "config.json"),
                                             os.path.join(out_dir, "tf", "model.ckpt"), layout="bert", log=log)
    return source, prefix, tf_config


def load_transformers(source, dropout):
    return transformers.BertForQuestionAnswering.from_pretrained(
        source, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)


def torch_batch(arrays, index):
    return {"input_ids": torch.tensor(arrays["input_ids"][index], dtype=torch.long),
            "attention_mask": torch.tensor(arrays["input_mask"][index], dtype=torch.long),
            "token_type_ids": torch.tensor(arrays["segment_ids"][index], dtype=torch.long),
            "start_positions": torch.tensor(arrays["start_position"][index], dtype=torch.long),
            "end_positions": torch.tensor(arrays["end_position"][index], dtype=torch.long)}


def warmup_linear_rate(base_rate, step, num_train_steps, num_warmup_steps):
    """tf_mrc.training.learning_rate_schedule for one step (google BERT's schedule)."""
    if step < num_warmup_steps:
        return base_rate * step / float(num_warmup_steps)
    return base_rate * max(0.0, 1.0 - step / float(max(num_train_steps, 1)))


def google_adamw_step(named_parameters, state, rate, weight_decay, clip_norm=1.0, beta_1=0.9, beta_2=0.999,
                      epsilon=1e-6):
    """One step of google BERT's optimizer on the gradients in ``.grad``: global-norm clipping, then Adam
    without bias correction, then weight decay added to the update (not for LayerNorm and biases)."""
    with torch.no_grad():
        grads = [(name, p, p.grad) for name, p in named_parameters if p.grad is not None]
        norm = torch.sqrt(sum(torch.sum(g * g) for _, _, g in grads))
        scale = clip_norm * torch.minimum(1.0 / norm, torch.tensor(1.0 / clip_norm))
        for name, p, g in grads:
            g = g * scale
            m, v = state.setdefault(name, (torch.zeros_like(p), torch.zeros_like(p)))
            m.mul_(beta_1).add_((1.0 - beta_1) * g)
            v.mul_(beta_2).add_((1.0 - beta_2) * g * g)
            update = m / (torch.sqrt(v) + epsilon)
            if weight_decay and not any(word in name for word in NO_DECAY):
                update = update + weight_decay * p
            p.sub_(rate * update)


# -------------------------------------------------------------------------------------------------------------
# (a) trajectory

def trajectory_batches(features, steps, batch_size, seed):
    """The feature indices of each step: one seeded permutation, cycled (both sides read these)."""
    order = np.random.RandomState(seed).permutation(len(features.arrays["input_ids"]))
    needed = np.resize(order, steps * batch_size)
    return needed.reshape(steps, batch_size)


def tf_mrc_losses(tf_config, checkpoint, features, batches, args, precision, model_dir):
    """Per-step training losses of tf_mrc's own model_fn and train op (dropout 0) on ``batches``."""
    config = dataclasses.replace(config_from_json(tf_config, layout="bert"), hidden_dropout_prob=0.0,
                                 attention_probs_dropout_prob=0.0)
    steps = len(batches)
    options = experiment.RunSpec(init_checkpoint=checkpoint, precision=precision, log_every=10 ** 9)
    plan = experiment.TrainingPlan(learning_rate=args.learning_rate, num_train_steps=steps,
                                   warmup_steps=int(steps * args.warmup_proportion))
    inner = model_fn_builder(get_task("cmrc2018"), config, options, plan, SingleProcess(), log=lambda line: None)
    losses = []

    class LossRecorder(tf.train.SessionRunHook):
        def __init__(self, loss):
            self.loss = loss

        def before_run(self, run_context):
            return tf.train.SessionRunArgs(self.loss)

        def after_run(self, run_context, run_values):
            losses.append(float(run_values.results))

    def model_fn(features, labels, mode, params):
        spec = inner(features, labels, mode, params)
        return spec._replace(training_hooks=list(spec.training_hooks) + [LossRecorder(spec.loss)])

    flat = batches.reshape(-1)
    ordered = {name: value[flat] for name, value in features.arrays.items()}

    def input_fn(params=None):
        return tf.data.Dataset.from_tensor_slices(ordered).batch(batches.shape[1])

    estimator = make_estimator(model_fn, model_dir, SingleProcess(), seed=0, save_checkpoints_steps=10 ** 9)
    estimator.train(input_fn, max_steps=steps)
    return losses


def transformers_losses(source, features, batches, args, bias_correction=False):
    """Per-step training losses of transformers' BertForQuestionAnswering (dropout 0) under google's optimizer
    arithmetic. ``bias_correction``: Adam's bias correction instead, the control that must not agree."""
    model = load_transformers(source, 0.0)
    # tf_mrc trains the [PAD] embedding like every other row; nn.Embedding's padding_idx would freeze it.
    model.bert.embeddings.word_embeddings.padding_idx = None
    model.train()
    steps = len(batches)
    warmup = int(steps * args.warmup_proportion)
    state, losses = {}, []
    for step, index in enumerate(batches):
        model.zero_grad()
        loss = model(**torch_batch(features.arrays, index)).loss
        loss.backward()
        losses.append(loss.item())
        rate = warmup_linear_rate(args.learning_rate, step, steps, warmup)
        if bias_correction:
            rate *= math.sqrt(1.0 - 0.999 ** (step + 1)) / (1.0 - 0.9 ** (step + 1))
        google_adamw_step(list(model.named_parameters()), state, rate, WEIGHT_DECAY)
    return losses


def relative_differences(curve, reference):
    return np.abs(np.asarray(curve) - np.asarray(reference)) / np.abs(np.asarray(reference))


def max_relative_difference(curve, reference):
    return float(np.max(relative_differences(curve, reference)))


def trajectory(args, source, checkpoint, tf_config, features, work_dir):
    batches = trajectory_batches(features, args.trajectory_steps, args.trajectory_batch_size, args.seed)
    started = time.time()
    curves = {"transformers": transformers_losses(source, features, batches, args),
              "transformers_bias_corrected": transformers_losses(source, features, batches, args, True)}
    torch_seconds = time.time() - started
    precisions = ["fp32"] + (["bf16"] if args.precision == "bf16" else [])
    for precision in precisions:
        started = time.time()
        curves["tf_mrc_" + precision] = tf_mrc_losses(tf_config, checkpoint, features, batches, args, precision,
                                                      os.path.join(work_dir, "trajectory_" + precision))
        log("[trajectory] tf_mrc %s: %d steps in %.0f s (transformers, twice: %.0f s)"
            % (precision, len(batches), time.time() - started, torch_seconds))
    result = {"curves": curves,
              "max_rel_diff": max_relative_difference(curves["tf_mrc_fp32"], curves["transformers"]),
              "control_max_rel_diff": max_relative_difference(curves["transformers_bias_corrected"],
                                                              curves["transformers"])}
    if "tf_mrc_bf16" in curves:
        bf16 = relative_differences(curves["tf_mrc_bf16"], curves["tf_mrc_fp32"])
        result.update(bf16_max_rel_diff=float(np.max(bf16)), bf16_median_rel_diff=float(np.median(bf16)))
    return result


# -------------------------------------------------------------------------------------------------------------
# (b) outcome

def tf_mrc_spec(args, files, checkpoint, tf_config, vocab, out_dir, **fields):
    values = dict(task="cmrc2018", model=args.model, output_dir=out_dir, train_file=files["train"],
                  dev_file=files["dev"], init_checkpoint=checkpoint, config_file=tf_config, vocab_file=vocab,
                  max_seq_length=args.max_seq_length, doc_stride=args.doc_stride,
                  max_query_length=args.max_query_length, learning_rate=args.learning_rate,
                  train_batch_size=args.train_batch_size, num_train_epochs=args.num_train_epochs,
                  warmup_proportion=args.warmup_proportion,
                  cache_dir=os.path.join(args.work_dir, "cache"), save_checkpoints_steps=10 ** 9, log_every=100,
                  eval_every_epochs=0)  # evaluation during training: off (its own cost, not learning)
    values.update(fields)
    return experiment.RunSpec(**values)


def tf_mrc_outcome(args, files, checkpoint, tf_config, vocab, precision, seed):
    spec = tf_mrc_spec(args, files, checkpoint, tf_config, vocab,
                       os.path.join(args.work_dir, "tf_mrc_%s_seed%d" % (precision, seed)), do_train=True,
                       do_eval=True, precision=precision, seed=seed, seeds=1)
    metrics = experiment.run(spec, log=log)[0]
    return {"f1": metrics["f1"], "em": metrics["em"]}


def untrained_outcome(args, files, checkpoint, tf_config, vocab):
    spec = tf_mrc_spec(args, files, checkpoint, tf_config, vocab, os.path.join(args.work_dir, "untrained"),
                       do_eval=True, seeds=1)
    metrics = experiment.run(spec, log=log)[0]
    return {"f1": metrics["f1"], "em": metrics["em"]}


def transformers_train(source, features, args, seed):
    """transformers' standard fine-tuning: dropout 0.1, torch AdamW (decay off for LayerNorm and biases),
    get_linear_schedule_with_warmup, gradient-norm clipping at 1.0, a fresh shuffle every epoch."""
    torch.manual_seed(seed)
    model = load_transformers(source, 0.1)
    named = list(model.named_parameters())
    groups = [{"params": [p for n, p in named if not any(w in n for w in NO_DECAY)],
               "weight_decay": WEIGHT_DECAY},
              {"params": [p for n, p in named if any(w in n for w in NO_DECAY)], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=args.learning_rate)
    count = len(features.arrays["input_ids"])
    steps = max(1, int(math.ceil(count * args.num_train_epochs / args.train_batch_size)))
    schedule = transformers.get_linear_schedule_with_warmup(optimizer, int(steps * args.warmup_proportion), steps)
    generator = torch.Generator().manual_seed(seed)
    order = torch.cat([torch.randperm(count, generator=generator)
                       for _ in range(int(math.ceil(steps * args.train_batch_size / count)))]).numpy()
    model.train()
    started = time.time()
    for step in range(steps):
        index = order[step * args.train_batch_size:(step + 1) * args.train_batch_size]
        loss = model(**torch_batch(features.arrays, index)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        if (step + 1) % 100 == 0 or step + 1 == steps:
            log("[transformers] seed %d step %d/%d loss %.4f (%.0f s)" % (seed, step + 1, steps, loss.item(),
                                                                          time.time() - started))
    return model.eval()


def transformers_predict(model, features, batch_size=64):
    """Per-feature start/end logits, in feature order (what tf_mrc's postprocess reads)."""
    outputs = []
    count = len(features.arrays["input_ids"])
    with torch.no_grad():
        for begin in range(0, count, batch_size):
            index = np.arange(begin, min(begin + batch_size, count))
            batch = torch_batch(features.arrays, index)
            out = model(**{name: batch[name] for name in ("input_ids", "attention_mask", "token_type_ids")})
            for start, end in zip(out.start_logits.numpy(), out.end_logits.numpy()):
                outputs.append({"start_logits": start, "end_logits": end})
    return outputs


def transformers_outcome(args, source, train, dev, settings, seed):
    task = get_task("cmrc2018")
    model = transformers_train(source, train, args, seed)
    predictions, _ = task.postprocess(dev.examples, dev.sidecar, transformers_predict(model, dev), settings)
    metrics = task.evaluate(dev.examples, predictions)
    log("[transformers] seed %d dev %s" % (seed, json.dumps(metrics)))
    return {"f1": metrics["f1"], "em": metrics["em"]}


def mean_of(runs):
    return {key: float(np.mean([run[key] for run in runs])) for key in ("f1", "em")}


def seed_std(*frameworks):
    """The seed-to-seed standard deviation of dev F1, pooled over frameworks (sample variance, ddof 1)."""
    variances = [np.var([run["f1"] for run in runs], ddof=1) for runs in frameworks if len(runs) > 1]
    return float(np.sqrt(np.mean(variances))) if variances else None


# -------------------------------------------------------------------------------------------------------------

def main(argv=None):
    args = parse_args(argv)
    started = time.time()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    os.makedirs(args.work_dir, exist_ok=True)
    train_file, questions = write_train_slice(args.train_file, args.train_questions, args.seed,
                                              os.path.join(args.work_dir, "train.json"))
    files = {"train": train_file,
             "dev": write_dev_slice(args.dev_file, args.dev_questions, os.path.join(args.work_dir, "dev.json"))}
    vocab = args.vocab_file
    if not args.pytorch:  # a model from scratch needs no embedding rows for pieces the data never uses
        vocab = write_data_vocab(args.vocab_file, [files["train"], files["dev"]],
                                 os.path.join(args.work_dir, "vocab.txt"))
    tokenizer = load_tokenizer("bert", vocab)
    settings = FeatureSettings(args.max_seq_length, args.doc_stride, args.max_query_length)
    train = featurize(files["train"], tokenizer, settings, True)
    log("[data] %d training questions -> %d windows; dev %s; vocabulary %d entries; %.0f s" % (
        questions, len(train.arrays["input_ids"]), files["dev"], tokenizer.vocab_size, time.time() - started))
    source, checkpoint, tf_config = transformers_start(args, tokenizer.vocab_size, args.work_dir)

    path = trajectory(args, source, checkpoint, tf_config, train, args.work_dir)
    figures = {"trajectory_max_rel_diff": path["max_rel_diff"],
               "trajectory_control_max_rel_diff": path["control_max_rel_diff"]}
    log("[trajectory] %d steps, batch %d: max relative loss difference tf_mrc vs transformers %.2e (target "
        "<= %g); with Adam's bias correction instead (control) %.2e" % (
            args.trajectory_steps, args.trajectory_batch_size, path["max_rel_diff"], TRAJECTORY_TARGET,
            path["control_max_rel_diff"]))
    if "bf16_max_rel_diff" in path:
        figures.update(bf16_trajectory_max_rel_diff=path["bf16_max_rel_diff"],
                       bf16_trajectory_median_rel_diff=path["bf16_median_rel_diff"])
        log("[trajectory] bf16 vs fp32 tf_mrc: relative loss difference median %.2e (tolerance %g: %s), max %.2e"
            % (path["bf16_median_rel_diff"], args.bf16_tolerance,
               "yes" if path["bf16_median_rel_diff"] <= args.bf16_tolerance else "NO", path["bf16_max_rel_diff"]))
    with open(os.path.join(args.work_dir, "trajectory.json"), "w") as f:
        json.dump(path, f, indent=1)

    if args.seeds:
        dev = featurize(files["dev"], tokenizer, settings, False)
        untrained = untrained_outcome(args, files, checkpoint, tf_config, vocab)
        runs = {"tf_mrc": [], "transformers": []}
        if args.precision == "bf16":
            runs["tf_mrc_bf16"] = []
        for seed in range(args.seed, args.seed + args.seeds):  # seed by seed: a cut-short run still compares
            runs["tf_mrc"].append(tf_mrc_outcome(args, files, checkpoint, tf_config, vocab, "fp32", seed))
            runs["transformers"].append(transformers_outcome(args, source, train, dev, settings, seed))
            if args.precision == "bf16":
                runs["tf_mrc_bf16"].append(tf_mrc_outcome(args, files, checkpoint, tf_config, vocab, "bf16", seed))
            with open(os.path.join(args.work_dir, "outcome.json"), "w") as f:
                json.dump({"untrained": untrained, "runs": runs}, f, indent=1)
        noise = seed_std(runs["tf_mrc"], runs["transformers"])
        figures.update({name: mean_of(per_seed) for name, per_seed in runs.items()})
        figures.update(untrained=untrained, seed_std=noise,
                       f1_diff=figures["tf_mrc"]["f1"] - figures["transformers"]["f1"],
                       per_seed={name: [run["f1"] for run in per_seed] for name, per_seed in runs.items()})
        if "tf_mrc_bf16" in runs:
            figures["bf16_f1_diff"] = figures["tf_mrc_bf16"]["f1"] - figures["tf_mrc"]["f1"]
        print_table(figures, args)
    figures["seconds"] = round(time.time() - started)
    print(json.dumps(figures, sort_keys=True))
    return figures


def print_table(figures, args):
    log("\n| model | dev F1 | dev EM | F1 per seed |\n|---|---:|---:|---|")
    for name in ("untrained", "tf_mrc", "transformers", "tf_mrc_bf16"):
        if name in figures:
            seeds = ", ".join("%.2f" % f1 for f1 in figures["per_seed"].get(name, []))
            log("| %s | %.2f | %.2f | %s |" % (name, figures[name]["f1"], figures[name]["em"], seeds))
    noise = figures["seed_std"] or 0.0  # one seed: no estimate of the noise
    bound = max(1.5, 2 * noise)
    log("\nf1_diff (tf_mrc - transformers) %.2f, seed std %.2f: |f1_diff| <= max(1.5, 2 x seed std) = %.2f: %s"
        % (figures["f1_diff"], noise, bound, "yes" if abs(figures["f1_diff"]) <= bound else "NO"))
    if "bf16_f1_diff" in figures:
        log("bf16 - fp32 dev F1 %.2f: within the bound %.2f: %s" % (
            figures["bf16_f1_diff"], bound, "yes" if abs(figures["bf16_f1_diff"]) <= bound else "NO"))


if __name__ == "__main__":
    try:
        main()
    except UserError as err:
        fail(err)
