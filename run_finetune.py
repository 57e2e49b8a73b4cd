r"""Fine-tune a Chinese BERT-family encoder on a Chinese MRC task.

    python run_finetune.py                      # the embedded default: tiny encoder, shipped passages
    python run_finetune.py --task=cmrc2018 --model=roberta_wwm_ext_base --data_dir=DATA --output_dir=OUT \
        --init_checkpoint=CKPT/bert_model.ckpt --vocab_file=CKPT/vocab.txt --do_train --do_eval --do_predict
    horovodrun -np 4 python run_finetune.py --task=cmrc2018 ...   # the same job on four workers
"""
import sys
import time

from absl import app, flags

from tf_mrc import options
from tf_mrc.errors import UserError, fail, one_line_errors
from tf_mrc.tasks import all_task_options, task_options_from

FLAGS = flags.FLAGS
options.define_absl_flags(flags)
HELP_FLAGS = ("--help", "-help", "--helpshort", "-helpshort", "-?", "-h")


def spec_from_flags():
    """The RunSpec of the command line: declared fields from their flags, the chosen task's options."""
    values = {field.name: getattr(FLAGS, field.name) for field in options.declared()
              if getattr(FLAGS, field.name) is not None}
    task_values = {option.name: getattr(FLAGS, option.name) for option in all_task_options()}
    return options.RunSpec(task_options=task_options_from(task_values, FLAGS.task), **values)


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
            with one_line_errors():
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
    if any(arg in HELP_FLAGS for arg in sys.argv[1:]):   # grouped help; --helpfull stays absl's
        print(options.grouped_help(FLAGS, __doc__))
        sys.exit(0)
    app.run(main)


if __name__ == "__main__":
    cli()
