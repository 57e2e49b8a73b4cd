"""UserError: the base of every error caused by the user's input (files, flags, configs, checkpoints).

The command-line tools print these as one line and exit 2; anything else is a bug and keeps its traceback.
"""
import sys


class UserError(ValueError):
    pass


def fail(err):
    """End a command-line tool on a user error: one line on stderr, exit status 2."""
    message = " ".join(str(err).split("\n"))
    sys.stderr.write("error: %s\n" % message)
    sys.exit(2)
