"""UserError: the base of every error caused by the user's input (files, flags, configs, checkpoints).

The command-line tools print these as one line and exit 2; anything else is a bug and keeps its traceback.
"""
import contextlib
import errno
import os
import re
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


OUT_OF_SPACE = re.compile(r"(\S+?)[;:]? *(No space left on device|Disk quota exceeded)")


def out_of_space(err):
    """A one-line UserError for an error that a full disk or quota caused, else None. Python raises those as
    OSError (ENOSPC / EDQUOT); TensorFlow as ResourceExhaustedError or UnknownError with the OS message inside,
    after many lines of graph trace."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        path = err.filename
    else:
        found = OUT_OF_SPACE.search(str(err))
        if not found:
            return None
        path = found.group(1)
    where = path
    while where and not os.path.isdir(where):  # the nearest directory that exists (a temporary one may not)
        parent = os.path.dirname(where)
        where = parent if parent != where else None
    free = ""
    if where:
        import shutil
        free = " (%.0f MB free there)" % (shutil.disk_usage(where).free / 2.0 ** 20)
    return UserError("no space left on the device writing %s%s: free space (or pass another directory) and run "
                     "the same command again; what was complete before stays" % (path or "the outputs", free))


@contextlib.contextmanager
def one_line_errors():
    """The body of a command-line tool: a UserError, or an error a full disk caused, ends it with one line (exit
    2); anything else is a bug and keeps its traceback."""
    try:
        yield
    except UserError as err:
        fail(err)
    except Exception as err:  # noqa: BLE001 -- only to recognise a full disk; re-raised otherwise
        full = out_of_space(err)
        if full is None:
            raise
        fail(full)
