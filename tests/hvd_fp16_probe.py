"""One rank of a 2-rank fp16 job, launched by tests/test_precision.py through horovodrun.

    horovodrun -np 2 -H localhost:2 python tests/hvd_fp16_probe.py OUT_DIR

Both ranks minimise factor * sum(w * x) in fp16 with tf_mrc.training's loss scaling. At the second step only
rank 1's gradient overflows (its factor is 100); the allreduce happens before the finite check, so both ranks
must skip that step. Each rank writes OUT_DIR/rank<R>.json with its state after every step.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from tf_mrc import distributed, training  # noqa: E402
from tf_mrc.compat import tf  # noqa: E402


def main(out_dir):
    dist = distributed.detect()
    x = np.array([1.0, 0.5, -1.0, 0.25], np.float32)
    w = tf.get_variable("w", initializer=np.array([0.5, -0.25, 1.0, 2.0], np.float32))
    factor = tf.placeholder_with_default(1.0, [])
    loss = tf.cast(tf.reduce_sum(tf.cast(w, tf.float16) * tf.cast(x, tf.float16) * tf.cast(factor, tf.float16)),
                   tf.float32)
    train_op, _, scale = training.create_train_op(loss, 0.01, 10 ** 6, 0, dist, precision="fp16",
                                                  loss_scale_growth_interval=3)
    state = {"w": w, "m": tf.global_variables("w/adam_m")[0], "step": tf.train.get_global_step(),
             "scale": scale.scale, "skipped": scale.skipped_steps}
    steps = []
    with tf.Session(config=dist.session_config()) as session:
        session.run(tf.global_variables_initializer())
        for step in range(4):
            overflow = step == 1 and dist.rank == 1
            session.run(train_op, {factor: 100.0 if overflow else 1.0})
            steps.append({name: np.asarray(value).tolist() for name, value in session.run(state).items()})
    with open(os.path.join(out_dir, "rank%d.json" % dist.rank), "w") as f:
        json.dump(steps, f)


if __name__ == "__main__":
    main(sys.argv[1])
