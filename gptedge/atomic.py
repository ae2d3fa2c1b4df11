"""Write files and folders so that a crash or a kill never leaves a half-written result.

Everything is first written under a temporary name in the same folder (same file system), then
renamed into place; ``os.replace`` is atomic on POSIX and Windows. A kill -9 can still leave the
temporary entry: ``remove_leftovers`` deletes those (only these names), and ``locked`` makes sure
no live writer's entry is taken, since two writers of one checkpoint or bundle wait for each other.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator


def _usual_mode(mode: int) -> int:
    """The permissions open() or mkdir() would give under the current umask: mkstemp and mkdtemp
    make private (0600 / 0700) entries, which would otherwise stay private after the rename."""
    umask = os.umask(0)
    os.umask(umask)
    return mode & ~umask


def usual_permissions(path: str | os.PathLike) -> None:
    """Give a file another library created privately the permissions open() would have given it
    (onnx writes external weights as 0600: a bundle must be as readable as its graph file)."""
    os.chmod(path, _usual_mode(0o666))


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, _usual_mode(0o666))
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def temporary_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary file path beside ``path``; on success it is renamed to ``path``.

    For writers that insist on a file name (torch.save, onnx.save, safetensors).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _usual_mode(0o666))  # after the writer: safetensors re-creates the file as 0600
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def staged_dir(final: str | os.PathLike, replace: bool = False) -> Iterator[Path]:
    """Build a folder under a temporary name and move it to ``final`` only if the block succeeds.

    With ``replace=True`` an existing ``final`` is swapped out (kept aside until the new one is in
    place, then deleted), so at every moment either the old or the new folder is complete.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    try:
        os.chmod(stage, _usual_mode(0o777))
        yield stage
        if final.exists():
            if not replace:
                raise FileExistsError(final)
            old = final.with_name(f".{final.name}.{os.getpid()}.old")
            os.replace(final, old)
            os.replace(stage, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(stage, final)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


# The temporary names the writers above use: mkstemp/mkdtemp put 8 characters of
# ``[a-z0-9_]`` between the prefix ``.<name>.`` and the suffix; ``staged_dir`` keeps a replaced
# folder as ``.<name>.<pid>.old`` until the new one is in place.
_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?:[a-z0-9_]{8}\.(?:tmp|partial)|\d+\.old)$")


def remove_leftovers(folder: str | os.PathLike, name: str | None = None) -> list[Path]:
    """Delete what a killed writer of this module left in ``folder``: temporary files, staged
    folders and folders kept aside while being replaced. Only these names are touched, never a
    user's file; with ``name``, only the leftovers of that one entry (e.g. a bundle staged in its
    parent folder). Call it while holding ``locked(...)`` on the entry, so that no live writer's
    temporary file is taken. Returns what was removed."""
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        m = _LEFTOVER.match(entry.name)
        if not m or (name is not None and m["name"] != name):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
        removed.append(entry)
    return removed


def lock_path(target: str | os.PathLike) -> Path:
    """The lock file of a checkpoint or bundle folder: beside it, not inside, because writers
    replace the folder itself (``staged_dir``)."""
    target = Path(target)
    return target.parent / f".{target.name}.lock"


_held: dict[Path, int] = {}  # lock files this process holds, and how many nested ``locked`` blocks


@contextlib.contextmanager
def locked(target: str | os.PathLike, waiting: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the writers' lock of a checkpoint or bundle folder for the block.

    Two commands that write one bundle (export --force, optimize, quantize, eval) then run one
    after the other, and both results land. The lock is ``flock`` on a file beside the folder:
    the kernel drops it when its process dies, so a killed command's lock is simply free again.
    The holder deletes the file when it is done (so no lock file stays behind); a waiter that
    then holds a deleted file's lock tries again on the new one. Nested blocks in one process
    (``gptedge build`` running the stages) share the lock. ``waiting`` is told once, in words,
    when another process holds it."""
    path = lock_path(target).resolve()
    if path in _held:
        _held[path] += 1
        try:
            yield
        finally:
            _held[path] -= 1
        return
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks here; writers there run one at a time by hand
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    told = False
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, _usual_mode(0o666))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if waiting is not None and not told:
                holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "another process"
                waiting(f"waiting for {holder}, which is writing {Path(target)}")
                told = True
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder deleted this file as it finished: lock the current one
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"gptedge process {os.getpid()}\n".encode(), 0)
        _held[path] = 1
        try:
            yield
        finally:
            del _held[path]
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)  # still holding it: a waiter sees the deletion and retries
    finally:
        os.close(fd)  # releases the lock
