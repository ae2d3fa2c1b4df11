"""``gptedge build``: from text to a bundle you can try, in one command.

    corpus -> tokenizer -> training   gptedge.train.trainer.train           OUT/checkpoint
    -> export (parity gate)           gptedge.export.bundle.export_bundle   OUT/bundle
    -> optimize                       gptedge.export.optimize               OUT/bundle, fp32 graph fused
    -> int8 and int4 variants         gptedge.export.quantize               OUT/bundle/model.int8.onnx, ...
    -> eval report                    gptedge.export.evaluate               OUT/bundle/eval/, manifest metrics

Each stage calls that stage's own public function, exactly what its subcommand runs; this module
only decides which stages still have work to do. A stage whose output is already there and valid
is skipped, so a build that was interrupted, or is run again, continues where it stopped:

- training is done when the checkpoint's config.json says it reached its final step (and it was
  trained on the same corpus with the same settings: otherwise the build stops and says so);
- the export is done when the bundle's manifest reads, every file matches its hash, and it was
  exported from exactly the checkpoint's current weights (otherwise it is exported again);
- optimize is done when the manifest's record names the fp32 graph's hash;
- quantize when the manifest lists the CPU variants (int8 and int4);
- eval when every variant has its figures in the manifest and the report is there.

Like every ``cli.py``, this module imports nothing heavy at the top: torch and onnx load when a
build runs.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from gptedge import paths
from gptedge.arguments import require
from gptedge.errors import UserError
from gptedge.train.config import PRESETS  # torch-free, like every cli module's imports

if TYPE_CHECKING:
    from gptedge.train.checkpoint_config import CheckpointConfig


@dataclass
class Build:
    """What one ``gptedge build`` works on."""

    corpus: str | None
    preset: str
    out: Path
    steps: int | None
    overrides: dict[str, Any]
    from_checkpoint: Path | None
    quiet: bool
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def checkpoint(self) -> Path:
        return self.from_checkpoint if self.from_checkpoint is not None else self.out / paths.CHECKPOINT_DIR

    @property
    def bundle(self) -> Path:
        return self.out / paths.BUNDLE_DIR


@dataclass(frozen=True)
class Stage:
    name: str
    done: Callable[[Build], str | None]  # why the stage can be skipped, or None if it must run
    run: Callable[[Build], None]


# ---------------------------------------------------------------------------------------------------
# The stages


def train_done(b: Build) -> str | None:
    from gptedge.train.checkpoint_config import read_config

    if b.from_checkpoint is not None:
        info = read_config(b.from_checkpoint)  # a one-line error if it is not a checkpoint
        return f"using {b.from_checkpoint} (step {info.step})"
    info = _checkpoint_info(b)
    if info is None:
        return None
    step = info.step
    target = b.steps if b.steps is not None else info.train.steps
    if step < target:
        return None  # train resumes it, and checks the corpus and settings itself
    _check_same_run(b, info)
    return f"{b.checkpoint} reached step {step} of {target}"


def run_train(b: Build) -> None:
    from gptedge.train.trainer import train

    resume = _checkpoint_info(b) is not None
    train(b.corpus, b.out, preset=b.preset, steps=b.steps, overrides=b.overrides, resume=resume, quiet=b.quiet)


def _checkpoint_info(b: Build) -> CheckpointConfig | None:
    from gptedge.train.checkpoint_config import CONFIG_FILE, read_config

    return read_config(b.checkpoint) if (b.checkpoint / CONFIG_FILE).is_file() else None


def _check_same_run(b: Build, info: CheckpointConfig) -> None:
    """A finished checkpoint is reused only by the build that made it: same corpus, preset and
    settings. (The corpus is compared by name; train compares contents when it resumes.)"""
    from gptedge.train.corpus import DEFAULT_CORPUS_NAME
    from gptedge.train.trainer import resolve_settings

    resolve_settings(b.preset, b.steps, b.overrides)  # an unknown or invalid setting: train's own error
    asked = {"corpus": DEFAULT_CORPUS_NAME if b.corpus is None else str(b.corpus), "preset": b.preset, **b.overrides}
    stored = {"corpus": info.corpus.name if info.corpus else None, "preset": info.preset,
              **info.model.to_dict(), **info.train.to_dict()}
    for key, value in asked.items():
        if value != stored.get(key):
            raise UserError(
                f"{b.out} holds a build made with {key} {stored.get(key)!r}, not {value!r}: "
                f"pass another --out for a new build, or the same settings to continue this one"
            )


def export_done(b: Build) -> str | None:
    from gptedge.export.bundle import exported_from
    from gptedge.runtime import contract
    from gptedge.train.checkpoint_config import read_config

    if not b.bundle.exists():
        return None
    try:
        manifest = contract.read_bundle(b.bundle)  # the format and every file's hash
    except UserError:
        return None  # damaged: export again (export_bundle replaces only a folder that is a bundle)
    if "fp32" not in manifest.variants or not exported_from(manifest, b.checkpoint / read_config(b.checkpoint).weights):
        return None  # from another checkpoint, or an earlier step of this one
    return f"{b.bundle} was exported from this checkpoint and its files match their hashes"


def run_export(b: Build) -> None:
    from gptedge.export.bundle import export_bundle

    export_bundle(b.checkpoint, b.bundle, force=b.bundle.exists(), quiet=b.quiet)


def optimize_done(b: Build) -> str | None:
    from gptedge.export import optimize
    from gptedge.runtime import contract

    manifest = contract.read_manifest(b.bundle)
    if optimize.is_optimized(manifest):
        return "the fp32 graph is already fused"
    return None


def run_optimize(b: Build) -> None:
    from gptedge.export.optimize import optimize_bundle

    optimize_bundle(b.bundle, quiet=b.quiet)


def _missing_cpu_variants(b: Build) -> list[str]:
    from gptedge.export.quantize import TARGETS
    from gptedge.runtime import contract

    have = contract.read_manifest(b.bundle).variants
    return [p for p in TARGETS["cpu"] if p not in have]


def quantize_done(b: Build) -> str | None:
    from gptedge.export.quantize import TARGETS

    return None if _missing_cpu_variants(b) else f"the bundle has its {' and '.join(TARGETS['cpu'])} variants"


def run_quantize(b: Build) -> None:
    from gptedge.export.quantize import quantize_bundle

    quantize_bundle(b.bundle, _missing_cpu_variants(b), quiet=b.quiet)


def inspect_done(b: Build) -> str | None:
    from gptedge.runtime import contract

    manifest = contract.read_manifest(b.bundle)
    if len(manifest.for_generation()) < len(manifest.variants):
        return "the bundle has its inspection variant (for Look inside)"
    return None


def run_inspect(b: Build) -> None:
    from gptedge.export.inspection import make_inspection_variant

    make_inspection_variant(b.bundle, b.checkpoint, quiet=b.quiet)


def eval_done(b: Build) -> str | None:
    from gptedge.runtime import contract

    variants = contract.read_manifest(b.bundle).for_generation()
    if all(v.metrics is not None for v in variants.values()) and _eval_report(b).is_file():
        return "every variant has its figures"
    return None


def run_eval(b: Build) -> None:
    from gptedge.export.evaluate import evaluate_bundle

    evaluate_bundle(b.bundle, checkpoint_dir=b.checkpoint, out_dir=_eval_report(b).parent, quiet=b.quiet)


def _eval_report(b: Build) -> Path:
    return b.bundle / "eval" / "eval.json"


STAGES = [
    Stage("train", train_done, run_train),
    Stage("export", export_done, run_export),
    Stage("optimize", optimize_done, run_optimize),
    Stage("quantize", quantize_done, run_quantize),
    Stage("inspect", inspect_done, run_inspect),
    Stage("eval", eval_done, run_eval),
]


# ---------------------------------------------------------------------------------------------------
# The build


def build(
    corpus: str | None = None,
    preset: str | None = None,
    out: str | Path | None = None,
    from_checkpoint: str | Path | None = None,
    steps: int | None = None,
    overrides: dict[str, Any] | None = None,
    quiet: bool = False,
) -> Build:
    """Run every stage that still has work to do; return what was built (``.bundle``, ``.ran``).

    overrides: model or training settings by name (see ``gptedge.train.trainer.train``)."""
    from_ckpt = Path(from_checkpoint) if from_checkpoint is not None else None
    if from_ckpt is not None and (corpus is not None or steps is not None or overrides):
        raise UserError(
            "--from-checkpoint replaces training: drop CORPUS, --steps and --set, or drop --from-checkpoint"
        )
    if preset is None:
        preset = _checkpoint_preset(from_ckpt) if from_ckpt is not None else paths.DEFAULT_PRESET
    b = Build(corpus, preset, Path(out) if out is not None else paths.run_dir(preset), steps, dict(overrides or {}),
              from_ckpt, quiet)
    for i, stage in enumerate(STAGES, 1):
        step = f"[{i}/{len(STAGES)}] {stage.name}"
        skip = stage.done(b)
        if skip is not None:
            b.skipped.append(stage.name)
            _say(b, f"{step}: skipped, {skip}")
            continue
        _say(b, f"{step} ...")
        started = time.perf_counter()
        stage.run(b)
        b.ran.append(stage.name)
        _say(b, f"{step}: done in {_duration(time.perf_counter() - started)}")
    return b


def _checkpoint_preset(checkpoint: Path) -> str:
    from gptedge.train.checkpoint_config import read_config

    return read_config(checkpoint).preset or "custom"


def _say(b: Build, line: str) -> None:
    if not b.quiet:
        print(line, flush=True)


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 60 else f"{int(seconds // 60)} min {seconds % 60:.0f} s"


def summary(b: Build, seconds: float) -> str:
    """Where the bundle is, what each variant costs and gains (the eval table), and what to run next."""
    from gptedge.measure.eval_report import format_table

    report = json.loads(_eval_report(b).read_text(encoding="utf-8"))
    return "\n".join([
        "",
        format_table(report),
        "",
        f"bundle: {b.bundle} (report: {_eval_report(b).with_suffix('.md')})",
        f"built in {_duration(seconds)}; ran: {', '.join(b.ran) or 'nothing'}; "
        f"already done: {', '.join(b.skipped) or 'nothing'}",
        f"open the page: {demo_command(b.bundle)}",
    ])


def demo_command(bundle: Path) -> str:
    """The command that opens the page for ``bundle`` (bare ``gptedge demo`` for the default one)."""
    return "gptedge demo" if bundle == paths.bundle_dir() else f"gptedge demo {bundle}"


# ---------------------------------------------------------------------------------------------------
# Command line


def parse_setting(text: str) -> tuple[str, Any]:
    """KEY=VALUE, VALUE read as an int, a float, true/false, or else a string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise UserError(f"--set {text!r} is not KEY=VALUE: write e.g. --set n_layer=2")
    key = key.replace("-", "_")
    for parse in (int, float):
        try:
            return key, parse(value)
        except ValueError:
            pass
    return key, {"true": True, "false": False}.get(value.lower(), value)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "build",
        help="from a corpus to a tested, quantized, measured bundle in one command",
        description="Train a tokenizer and a GPT on CORPUS, export it to ONNX (checked against PyTorch), "
        "optimize it, add int8 and int4 variants and the inspection variant (Look inside), and measure them all. Stages whose output is already "
        "there are skipped, so running it again continues an interrupted build. Then: gptedge demo.",
    )
    p.add_argument("corpus", nargs="?", metavar="CORPUS",
                   help="a text file, a folder of .txt/.md files or a quoted glob (default: Python's built-in "
                   "documentation, no download)")
    p.add_argument("--preset", choices=sorted(PRESETS),
                   help=f"model size and training settings (default: {paths.DEFAULT_PRESET}; "
                   "with --from-checkpoint, the checkpoint's)")
    p.add_argument("--out", metavar="DIR",
                   help="build folder (default: runs/PRESET), holding DIR/checkpoint and DIR/bundle")
    p.add_argument("--from-checkpoint", metavar="DIR",
                   help="start from this checkpoint (from gptedge train or gptedge import) instead of training")
    p.add_argument("--steps", type=int, help="training steps (default: the preset's); more than a finished "
                   "checkpoint has trains it on")
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                   help="override a model or training setting of the preset, e.g. --set n_layer=2 (repeatable)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress display, only the summary")
    p.set_defaults(func=run_build)


def run_build(args: argparse.Namespace) -> int:
    require("torch", "train")
    require("onnxscript", "export")
    started = time.perf_counter()
    overrides = dict(parse_setting(s) for s in args.settings)
    from_checkpoint = paths.resolve_checkpoint(args.from_checkpoint) if args.from_checkpoint else None
    b = build(args.corpus, args.preset, args.out, from_checkpoint, args.steps, overrides, args.quiet)
    print(summary(b, time.perf_counter() - started))
    return 0
