"""Accuracy of CHID's decoders (independent / greedy / optimal) on simulated model scores.

A ChID line has k blanks and 10 candidates: the k answers (each used once) and 10 - k distractors. The
simulated model gives each (blank, candidate) pair a Gaussian logit, ``margin`` higher for the right one;
the margin is set so that blank-by-blank accuracy is near the published 82-86 %. Prints accuracy per decoder.

    python bench/chid_decoding.py [--lines 20000] [--margin 2.6] [--seed 0]
"""
import argparse

import numpy as np

from tf_mrc.tasks.chid import ASSIGNERS
from tf_mrc.tasks.base import log_softmax


def simulate(blanks, lines, margin, rng):
    correct = {name: 0 for name in ASSIGNERS}
    for _ in range(lines):
        gold = rng.permutation(10)[:blanks]
        logits = rng.normal(size=(blanks, 10))
        logits[np.arange(blanks), gold] += margin
        logp = np.stack([log_softmax(row) for row in logits])
        for name, assign in ASSIGNERS.items():
            correct[name] += int(np.sum(np.array(assign(logp)) == gold))
    return {name: 100.0 * n / (blanks * lines) for name, n in correct.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=20000)
    parser.add_argument("--margin", type=float, default=2.6)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.RandomState(args.seed)
    print("blanks/line  independent  greedy  optimal   (accuracy %%, %d lines each, margin %.2f)"
          % (args.lines, args.margin))
    for blanks in (1, 2, 4, 6, 8, 10):
        result = simulate(blanks, args.lines, args.margin, rng)
        print("%11d  %11.2f  %6.2f  %7.2f" % (blanks, result["independent"], result["greedy"], result["optimal"]))


if __name__ == "__main__":
    main()
