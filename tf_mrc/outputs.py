"""Writing outputs so that a kill never leaves half a file: every output tf_mrc writes (predictions, n-best,
eval_results.json, results.md, run_config.json, exported graphs and their sidecars) is written to a temporary
file in the same directory and moved over the target with ``os.replace``, which is atomic on one filesystem.
A reader sees the earlier good copy or the new complete one, never a truncated mix.
"""
import contextlib
import json
import os
import shutil
import tempfile

from tf_mrc.errors import UserError


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()   # what open() would have given the file (mkstemp makes it 0600)


@contextlib.contextmanager
def atomic_open(path, mode="w"):
    """``open(path, mode)`` for writing ('w' text as UTF-8, or 'wb'), published by os.replace on success only."""
    if mode not in ("w", "wb"):
        raise ValueError("atomic_open writes whole files: mode 'w' or 'wb', got %r" % mode)
    directory = os.path.dirname(os.path.abspath(path))
    try:
        handle, temporary = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    except OSError as err:
        raise UserError("cannot write %s (%s)" % (path, err.strerror or err))
    try:
        with os.fdopen(handle, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temporary, _FILE_MODE)
        try:
            os.replace(temporary, path)
        except OSError as err:
            raise UserError("cannot write %s (%s)" % (path, err.strerror or err))
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def write_json(path, obj, indent=1, **options):
    """json.dump ``obj`` (non-ASCII kept as is) to ``path`` atomically."""
    with atomic_open(path) as f:
        json.dump(obj, f, ensure_ascii=False, indent=indent, **options)


def write_text(path, text):
    with atomic_open(path) as f:
        f.write(text)


def write_bytes(path, data):
    with atomic_open(path, "wb") as f:
        f.write(data)


def copy_file(source, target):
    """shutil.copyfile, atomically."""
    with open(source, "rb") as src, atomic_open(target, "wb") as dst:
        shutil.copyfileobj(src, dst)


def make_writable_directory(directory, what):
    """Create ``directory`` if needed and check that files can be made in it, before anything is written;
    otherwise one UserError line that names it (``what``, e.g. '--output_dir runs/x') and says why."""
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise UserError("%s is a file, not a directory" % what)
    try:
        os.makedirs(directory, exist_ok=True)
        tempfile.TemporaryFile(dir=directory).close()
    except OSError as err:
        raise UserError("%s is not a writable directory (%s)" % (what, err.strerror or err))
