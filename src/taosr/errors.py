"""`InputError`: a failure of what a command was given, or of where it runs, not of taosr.

Missing or corrupt files, refused settings, a full disk, an output folder that belongs to another run:
the command line (`taosr.cli.inputs.input_errors`) prints such an error as one `error: <message>` line
and exits with status 2; the message names the file and says what to do. Anything else is a bug in
taosr and keeps its traceback.
"""

from __future__ import annotations

import errno


class InputError(ValueError):
    """A run refused because of its input or its environment; the message names the file and the fix."""


FIXES = {
    errno.ENOSPC: "free some disk space and rerun (finished work is kept)",
    errno.EDQUOT: "free some disk space and rerun (finished work is kept)",
    errno.EACCES: "choose a path you may write to (or fix its permissions)",
    errno.EPERM: "choose a path you may write to (or fix its permissions)",
    errno.EROFS: "choose a path on a writable filesystem",
    errno.ENOENT: "check the path",
    errno.ENOTDIR: "a part of the path is a file, not a folder: check the path",
    errno.EISDIR: "the path is a folder where a file is expected: check the path",
}


def os_error_line(e: OSError) -> str:
    """One line for an operating-system error: the file, what went wrong, and the fix."""
    where = e.filename if e.filename is not None else "(no file name)"
    what = e.strerror or str(e)
    fix = FIXES.get(e.errno, "check the path and the disk, then rerun")
    return f"{where}: {what}; {fix}"
