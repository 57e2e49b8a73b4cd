"""UserError: the base of every error caused by the user's input (files, flags, configs, checkpoints).

The command-line tools print these as one line and exit 2; anything else is a bug and keeps its traceback.
"""
import sys


class UserError(ValueError):
    pass


def first_line(err):
    """The first line of an exception's message (TensorFlow's run over many lines), or its type's name."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def fail(err):
    """End a command-line tool on a user error: one line on stderr, exit status 2."""
    message = " ".join(str(err).split("\n"))
    sys.stderr.write("error: %s\n" % message)
    sys.exit(2)
