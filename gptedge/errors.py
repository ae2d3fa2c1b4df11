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


def check_text(text: str, what: str) -> str:
    """``text`` if it is valid Unicode, else a UserError naming the first bad character.

    Lone surrogates are not text: the tokenizer and every encoder refuse them. They reach us from
    a command line holding bytes that are not UTF-8 (Python keeps such a byte as U+DC80..U+DCFF,
    "surrogateescape") and from JSON, which can spell them ("\\udcff"). Replacing them with U+FFFD
    would quietly change the prompt, so they are refused with the byte or code point named."""
    try:
        text.encode("utf-8")  # fast path: refuses exactly the lone surrogates, at C speed
        return text
    except UnicodeEncodeError as e:
        i = e.start
    c = text[i]
    if "\udc80" <= c <= "\udcff":  # an undecodable byte from the command line or a file name
        raise UserError(
            f"{what} is not valid UTF-8 (byte 0x{ord(c) - 0xDC00:02x} at character {i}): "
            f"pass UTF-8 text (convert it with iconv -t UTF-8)"
        )
    raise UserError(
        f"{what} holds a lone surrogate U+{ord(c):04X} at character {i}, which is not text: "
        f"pass valid Unicode (both halves of a surrogate pair, or the character itself)"
    )
