"""The one exception type for mistakes a user can fix.

The CLI prints a ``UserError`` as a single line and exits non-zero; anything else is a bug and
keeps its traceback. Messages name the problem and the fix, e.g.
``corpus folder 'x' has no .txt or .md files: pass a text file, a folder of .txt/.md files or a glob``.
"""


class UserError(Exception):
    """A problem with the user's input (files, flags, bundle), reported without a traceback."""


def write_error(e: OSError, target: object, again: str) -> UserError:
    """The one-line message for a failed write: disk full, or anything else the OS refused.

    ``again`` names the command to repeat once the cause is fixed (e.g. "export again")."""
    import errno

    if e.errno == errno.ENOSPC:
        return UserError(f"no space left on the device writing {target}: free some space and {again}")
    return UserError(f"cannot write {target} ({e.strerror or e}): check the folder and its permissions")
