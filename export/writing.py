"""The one transaction every command that writes a bundle goes through.

    with Transaction(bundle, "quantize", steps=4, quiet=quiet) as t:
        t.manifest                          # read under the bundle's lock: no update is lost
        path = t.new_file("model.int8.onnx")  # deleted again if the block fails
        t.step("convert") ...
        t.manifest.variants["int8"] = ...
        t.commit()                          # the new manifest: the commit point
        t.retire("model.onnx")              # deleted after the block, if no variant lists it any more

What it does for each command, so the command keeps only its own work:
- refuses a folder that is not a bundle before taking its lock;
- holds the bundle's writers' lock (``atomic.locked``) for the whole read-modify-write, so export
  --force, optimize, quantize and eval on one bundle run one after the other and all results land
  (the manifest is replaced atomically, so a reader never needs the lock);
- first deletes what a killed writer left (our temporary names, graph files of ours the manifest
  does not list), never a user's file;
- shows the command's progress, one step at a time;
- on any failure deletes the files it made, so the bundle is exactly as it was, and turns a
  refused write (disk full, read-only folder) into a one-line error.

``writing`` is the lock, clean-up and error part alone, for ``gptedge export``, which stages a whole
new folder instead (``atomic.staged_dir``). The graph files' names and ``save_graph`` are here too:
every stage writes its graph through them, and the clean-up knows ours by their names. None of it
needs torch, so optimize and quantize start without it.
"""

from __future__ import annotations

import contextlib
import datetime
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

import onnx
from tqdm import tqdm

from gptedge import atomic
from gptedge.errors import UserError, write_error
from gptedge.runtime import contract


# The graph files the export stages write. Named here, in one place, so that a graph a killed
# command wrote but never committed can be told from a user's file: only these are ever deleted.
MODEL_FILE = "model.onnx"  # gptedge export's fp32 graph
INSPECTION_FILE = "model.inspect.onnx"  # gptedge inspect --make
OPTIMIZED_SUFFIX = ".opt.onnx"

# Protobuf cannot serialise a message over 2 GiB: bigger models keep their weights in
# "<model>.onnx.data" beside the graph. 64 MiB is left for the graph itself and the constants.
SINGLE_FILE_LIMIT = 2**31 - 2**26


def optimized_name(file: str) -> str:
    """The fused graph's file name: never the current one, so the manifest is the commit point."""
    return Path(file).name.removesuffix(".onnx") + OPTIMIZED_SUFFIX


def variant_file(precision: str) -> str:
    """The file of a variant ``gptedge quantize`` makes."""
    return f"model.{precision}.onnx"


def graph_files() -> set[str]:
    """Every graph file name the export stages write (every precision but fp32 is quantize's)."""
    quantized = (variant_file(p) for p in contract.PRECISIONS if p != "fp32")
    graphs = {MODEL_FILE, optimized_name(MODEL_FILE), INSPECTION_FILE, *quantized}
    return graphs | {f"{g}.data" for g in graphs}


def save_graph(model: onnx.ModelProto, path: str | Path, external_data: bool | None = None) -> list[Path]:
    """Write the graph; weights go to ``<name>.data`` beside it when ``external_data`` (None: only
    when they would not fit in one protobuf). Returns the files written, graph first."""
    path = Path(path)
    if external_data is None:
        external_data = sum(t.ByteSize() for t in model.graph.initializer) > SINGLE_FILE_LIMIT
    data_name = path.name + ".data"
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=external_data,
        all_tensors_to_one_file=True,
        location=data_name,
        size_threshold=1024,
    )
    if not external_data:
        return [path]
    atomic.usual_permissions(path.with_name(data_name))
    return [path, path.with_name(data_name)]


def listed_files(manifest: contract.Manifest) -> set[str]:
    return {f for v in manifest.variants.values() for f, _, _ in v.files()}


def remove_leftovers(bundle: Path) -> list[Path]:
    """What a killed export, optimize or quantize left: temporary files and folders of ours, and
    graph files of ours that the committed manifest does not list (written, never committed)."""
    removed = atomic.remove_leftovers(bundle.parent, name=bundle.name)
    if not (bundle / contract.MANIFEST_FILE).is_file():
        return removed
    removed += atomic.remove_leftovers(bundle)
    try:
        manifest = contract.read_manifest(bundle)
    except UserError:  # a damaged manifest: the command itself says so; delete nothing on a guess
        return removed
    for name in sorted(graph_files() - listed_files(manifest)):
        path = bundle / name
        if path.is_file():
            path.unlink()
            removed.append(path)
    return removed


@contextlib.contextmanager
def writing(bundle: str | Path, command: str) -> Iterator[None]:
    """Hold ``bundle``'s writers' lock for the block, clear leftovers first, and turn a refused
    write (disk full, read-only folder) into a one-line error that says to run ``command`` again."""
    bundle = Path(bundle)
    try:
        with atomic.locked(bundle, waiting=lambda message: print(f"gptedge: {message} ...", file=sys.stderr)):
            remove_leftovers(bundle)
            yield
    except OSError as e:
        raise write_error(e, bundle, f"{command} again") from None


def graph_file_fields(bundle: Path, written: list[Path]) -> dict[str, Any]:
    """A variant's file fields for the graph ``save_graph`` wrote (and its external data, if any)."""
    size, digest = contract.describe_file(bundle, written[0].name)
    fields: dict[str, Any] = dict(file=written[0].name, size_bytes=size, sha256=digest,
                                  data_file=None, data_size_bytes=0, data_sha256="")
    if len(written) > 1:
        fields["data_file"] = written[1].name
        fields["data_size_bytes"], fields["data_sha256"] = contract.describe_file(bundle, written[1].name)
    return fields


def tool_versions(*names: str) -> dict[str, str]:
    """The installed versions of the tools that made something, for its record in the manifest."""
    return {name: metadata.version(name) for name in names}


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


class Transaction:
    """One command's change to an existing bundle (see the module docstring)."""

    def __init__(self, bundle: str | Path, command: str, steps: int = 0, quiet: bool = False) -> None:
        self.bundle = Path(bundle)
        self.command = command
        self.manifest: contract.Manifest
        self._steps, self._quiet = steps, quiet
        self._stack: contextlib.ExitStack
        self._new: list[Path] = []  # made by this transaction: deleted on failure unless committed
        self._committed: set[str] = set()  # the files the manifest on disk lists
        self._retired: list[str] = []  # to delete once committed, unless still listed
        self._bar: tqdm | None = None

    def __enter__(self) -> "Transaction":
        contract.read_manifest(self.bundle)  # not a bundle: said before taking its lock
        with contextlib.ExitStack() as stack:
            stack.enter_context(writing(self.bundle, self.command))
            self.manifest = contract.read_manifest(self.bundle)  # as the last writer left it
            self._committed = listed_files(self.manifest)
            self._stack = stack.pop_all()  # held until __exit__; released here if the reading failed
        return self

    def __exit__(self, kind, error, traceback) -> bool:
        try:
            self._finish(succeeded=kind is None)
        finally:
            suppressed = self._stack.__exit__(kind, error, traceback)  # the lock; OSError -> one line
        return suppressed

    def _finish(self, succeeded: bool) -> None:
        if self._bar is not None:
            if succeeded:
                self._bar.update()
                self._bar.set_postfix_str("done")
            self._bar.close()
        if not succeeded:  # nothing of this left behind: the bundle is as the last commit left it
            for path in self._new:
                if path.name not in self._committed:
                    path.unlink(missing_ok=True)
            return
        listed = listed_files(self.manifest)
        for name in self._retired:
            if name not in listed:
                (self.bundle / name).unlink(missing_ok=True)

    def step(self, name: str) -> None:
        """Start the next step of the command's progress bar (its first call draws the bar)."""
        if self._bar is None:
            self._bar = tqdm(total=self._steps, desc=self.command, unit="step", disable=self._quiet,
                             file=sys.stderr, bar_format="{desc}: {n}/{total} {postfix} [{elapsed}]")
        else:
            self._bar.update()
        self._bar.set_postfix_str(name)

    def new_file(self, name: str) -> Path:
        """A path for a file this command makes (and its ONNX external data beside it): removed if
        the command fails before ``commit``."""
        path = self.bundle / name
        self._new += [path, path.with_name(path.name + ".data")]
        return path

    def commit(self) -> None:
        """Write ``manifest`` (checked, atomic): from here the new files belong to the bundle."""
        contract.write_manifest(self.bundle, self.manifest)
        self._committed = listed_files(self.manifest)

    def retire(self, *names: str | None) -> None:
        """Files to delete when the command succeeds, if no variant lists them by then."""
        self._retired += [n for n in names if n]
