"""Fine-tune a Chinese BERT-family encoder on a Chinese MRC task.

    python run_finetune.py                      # the embedded default: tiny encoder, shipped passages
    python run_finetune.py --task=cmrc2018 --model=roberta_wwm_ext_base --data_dir=DATA --output_dir=OUT \
        --init_checkpoint=CKPT/bert_model.ckpt --vocab_file=CKPT/vocab.txt --do_train --do_eval --do_predict
    horovodrun -np 4 python run_finetune.py --task=cmrc2018 ...   # the same job on four workers
"""
import dataclasses
import sys
import time

from absl import app, flags

from tf_mrc import presets
from tf_mrc.errors import UserError, fail

FLAGS = flags.FLAGS
flags.DEFINE_enum("task", "cmrc2018", ["cmrc2018", "drcd", "cjrc", "chid", "c3"], "Task.")
flags.DEFINE_enum("model", "roberta_wwm_ext_base", list(presets.MODEL_NAMES), "Model preset.")
flags.DEFINE_string("output_dir", None, "Checkpoints, predictions and results go here.")
flags.DEFINE_string("data_dir", None, "Directory holding the task's files under their published names.")
flags.DEFINE_string("train_file", None, "Training file (default: DATA_DIR/<task's train file>).")
flags.DEFINE_string("dev_file", None, "Evaluation file (default: DATA_DIR/<task's dev file>).")
flags.DEFINE_string("predict_file", None, "File to predict (default: the dev file).")
flags.DEFINE_string("init_checkpoint", None, "Checkpoint to start from (published TF variable names).")
flags.DEFINE_string("vocab_file", None, "WordPiece vocabulary of the checkpoint.")
flags.DEFINE_string("spm_model", None, "SentencePiece model (XLNet).")
flags.DEFINE_string("config_file", None, "The checkpoint's BERT/ALBERT/XLNet JSON config; overrides the preset.")
flags.DEFINE_bool("do_train", False, "Train.")
flags.DEFINE_bool("do_eval", False, "Predict the dev file and score it with the task's official metric.")
flags.DEFINE_bool("do_predict", False, "Write predictions.json for the predict file.")
flags.DEFINE_integer("seeds", 1, "Run this many seeds (seed, seed+1, ...) and write results.md (mean and max).")
flags.DEFINE_integer("seed", 12345, "First random seed.")
flags.DEFINE_bool("lower_case", None, "Lower-case input (default: the model's convention; BERT/ALBERT yes, XLNet no).")
flags.DEFINE_integer("max_seq_length", None, "Tokens per window (default: the task's, capped by the model's).")
flags.DEFINE_integer("doc_stride", 128, "Stride between passage windows.")
flags.DEFINE_integer("max_query_length", 64, "Question tokens kept.")
flags.DEFINE_integer("max_answer_length", 50, "Longest answer in tokens.")
flags.DEFINE_integer("n_best_size", 20, "Candidates kept per question.")
flags.DEFINE_float("num_train_epochs", None, "Epochs (default: the preset's for this task).")
flags.DEFINE_integer("train_batch_size", None, "Global batch in features per optimizer step, over all workers and "
                     "accumulated micro-batches (default: the preset's, e.g. 32); each rank's micro-batch is "
                     "this / (workers x --grad_accum_steps).")
flags.DEFINE_integer("predict_batch_size", 32, "Batch for prediction.")
flags.DEFINE_float("learning_rate", None, "Peak learning rate (default: the preset's).")
flags.DEFINE_float("warmup_proportion", None, "Share of steps with linear warmup (default: the preset's).")
flags.DEFINE_integer("max_train_steps", None, "Stop after this many steps (overrides epochs).")
flags.DEFINE_integer("save_checkpoints_steps", 1000, "Checkpoint interval; training resumes from the last one.")
flags.DEFINE_integer("keep_checkpoint_max", 3, "Checkpoints kept.")
flags.DEFINE_integer("log_every", 50, "Steps between progress lines.")
flags.DEFINE_enum("kernels", "fused", ["fused", "reference", "blocksparse", "auto"], "GELU/softmax kernels.")
flags.DEFINE_string("cache_dir", None, "Feature cache (default: OUTPUT_DIR/cache).")
flags.DEFINE_integer("preprocess_workers", None, "Processes featurizing the data files on each rank (default: the "
                     "host's cores divided by its Horovod ranks; the cache is byte-identical for any number).")
flags.DEFINE_bool("lr_scale_with_workers", False, "Multiply the learning rate by the number of Horovod workers.")
flags.DEFINE_bool("fp16_allreduce", False, "Compress gradients to fp16 for the Horovod allreduce.")
flags.DEFINE_enum("precision", "fp32", ["fp32", "fp16", "bf16"],
                  "Encoder compute dtype; variables stay fp32. fp16 adds dynamic loss scaling and skips steps "
                  "whose gradients overflow.")
flags.DEFINE_integer("loss_scale_growth_interval", 2000, "fp16: overflow-free steps before the loss scale doubles.")
flags.DEFINE_bool("recompute", False, "Gradient checkpointing: keep only each transformer block's input and "
                  "recompute the block in the backward pass (bert/albert layouts).")
flags.DEFINE_enum("attention_dropout_placement", "probs", ["probs", "context"],
                  "Attention dropout on the probabilities (BERT's) or on the merged context (smaller mask).")
flags.DEFINE_bool("xla", False, "XLA JIT auto-clustering (best effort; on CPU also set "
                  "TF_XLA_FLAGS=--tf_xla_cpu_global_jit).")
# The training recipe: the global batch's split, weight decay, evaluation during training.
flags.DEFINE_integer("grad_accum_steps", None, "Micro-batches accumulated per optimizer step, a split of the global "
                     "--train_batch_size that saves memory (default: the preset's, 1; C3: 4); steps and the LR "
                     "schedule count optimizer steps.")
flags.DEFINE_float("weight_decay", None, "AdamW decoupled weight decay rate per step, x learning rate (default: "
                   "the preset's, 0.01).")
flags.DEFINE_float("eval_every_epochs", 0.5, "With --do_train --do_eval: score the dev set every this many epochs "
                   "(default 0.5, the reference's) and keep the best checkpoint in OUTPUT_DIR/best; 0: only after "
                   "training.")
# Task options (each task reads the ones it knows; all of them key the feature cache).
flags.DEFINE_string("opencc_config", "t2s", "drcd: OpenCC conversion applied before tokenization.")
flags.DEFINE_float("split_ratio", None, "cjrc: split the training file by passage (train part = ratio, dev part = "
                   "the rest, fixed seed); pass the same file as --train_file and --dev_file.")
flags.DEFINE_enum("metric", None, ["official", "cmrc"], "cjrc: the official CJRC metric or the CMRC definition.")
flags.DEFINE_string("chid_answers", None, "chid (original ChID/CLUE format): the answer map file(s), comma-separated.")
flags.DEFINE_enum("chid_decoding", None, ["optimal", "greedy", "independent"],
                  "chid: assign candidates to the blanks of a passage jointly (optimal, greedy) or blank by blank.")
flags.DEFINE_string("c3_subsets", None, "c3: which subsets a data directory run reads: d, m or d,m.")

TASK_OPTIONS = ("opencc_config", "split_ratio", "metric", "chid_answers", "chid_decoding", "c3_subsets")


def spec_from_flags():
    from tf_mrc.experiment import RunSpec
    names = [f.name for f in dataclasses.fields(RunSpec) if f.name != "task_options"]
    values = {name: getattr(FLAGS, name) for name in names if name in FLAGS and getattr(FLAGS, name) is not None}
    if not FLAGS.output_dir:
        raise UserError("--output_dir is required")
    options = {name: getattr(FLAGS, name) for name in TASK_OPTIONS if getattr(FLAGS, name) is not None}
    return RunSpec(task_options=options, **values)


def main(argv):
    from tf_mrc import distributed, experiment, restart
    started = time.time()
    try:
        dist = distributed.detect()
    except UserError as err:
        fail(err)
    # Under horovodrun a failing rank must end its process at once, so that the launcher ends the job.
    # A scheduler's SIGTERM stops the run as Ctrl-C does.
    with dist.fail_fast(), restart.sigterm_as_interrupt():
        try:
            spec = None
            if len(sys.argv) == 1:
                spec = experiment.embedded_default()
                if dist.is_chief:
                    print("[run] no arguments: the embedded default (tiny encoder on "
                          "tf_mrc/resources/tiny/passages.json)")
            else:
                spec = spec_from_flags()
            experiment.run(spec, dist=dist)
        except UserError as err:
            fail(err)
        except KeyboardInterrupt as stop:   # Ctrl-C or SIGTERM: no traceback, say how to resume; 130 / 143
            sys.stderr.write("%s\n" % (restart.interruption_message(spec) if spec else "interrupted"))
            sys.exit(restart.interruption_status(stop))
    if dist.is_chief:
        print("[run] done in %.0f s; outputs in %s (predictions.json, nbest_predictions.json, eval_results.json)"
              % (time.time() - started, spec.output_dir))


def cli():
    """The console command ``tf-mrc-finetune`` (pip install .): the same as ``python run_finetune.py``."""
    sys.stdout.reconfigure(line_buffering=True)   # progress lines reach a redirected log as they happen
    app.run(main)


if __name__ == "__main__":
    cli()
