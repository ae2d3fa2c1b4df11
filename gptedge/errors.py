"""The one exception type for mistakes a user can fix.

The CLI prints a ``UserError`` as a single line and exits non-zero; anything else is a bug and
keeps its traceback. Messages name the problem and the fix, e.g.
``corpus folder 'x' has no .txt or .md files: pass a text file, a folder of .txt/.md files or a glob``.
"""


class UserError(Exception):
    """A problem with the user's input (files, flags, bundle), reported without a traceback."""
