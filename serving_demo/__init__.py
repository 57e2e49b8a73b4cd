"""Answer questions with an exported frozen graph (``python -m serving_demo``), on the command line or over HTTP.

The demo featurizes and post-processes with the task's own code (tf_mrc.tasks), the code evaluation uses, so
its answers equal ``run_finetune.py --do_predict``'s on the same inputs.
"""
