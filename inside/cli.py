"""``gptedge inspect``: attention heatmaps and each layer's guesses for a text, from the bundle's
inspection variant; ``--make`` adds that variant (needs the export extra and the checkpoint)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gptedge import atomic, paths
from gptedge.arguments import BUNDLE_HELP, CHECKPOINT_HELP, whole_number
from gptedge.errors import UserError, check_text, write_error


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "inspect",
        help="look inside the model: attention heatmaps and each layer's next-token guesses (PNG)",
        description="Run TEXT through the bundle's inspection variant and write, per layer, a PNG of every "
        "head's attention (tokens on both axes; row i shows how much token i takes from each earlier "
        "token; the masked future is blank), and print each layer's top guesses for the next token (the "
        "logit lens; the last layer's are the model's own). --layer and --head narrow it to one map. "
        "With --make, add the inspection variant to BUNDLE first (traced from its checkpoint).",
    )
    p.add_argument("bundle", metavar="BUNDLE", help=BUNDLE_HELP)
    p.add_argument("text", metavar="TEXT", nargs="?", help="the text to look at (not needed with --make alone)")
    p.add_argument("--make", action="store_true", help="add the inspection variant to BUNDLE (needs the export extra)")
    p.add_argument("--checkpoint", metavar="DIR", help=f"with --make: {CHECKPOINT_HELP} (default: the run folder "
                   "holding BUNDLE)")
    p.add_argument("--layer", type=whole_number(0), help="only this layer")
    p.add_argument("--head", type=whole_number(0), help="only this head")
    p.add_argument("--top", type=whole_number(1), default=5, help="guesses per layer (default 5)")
    p.add_argument("--out", default="inspect", metavar="DIR", help="folder for the PNGs and lens.txt (default ./inspect)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    p.set_defaults(func=run_inspect)


def run_inspect(args: argparse.Namespace) -> int:
    bundle = paths.resolve_bundle(args.bundle)
    if args.text is None and not args.make:
        raise UserError("give the TEXT to look at (or --make to add the inspection variant)")
    if args.text is not None:
        check_text(args.text, "the text")
    out = paths.output_folder(args.out, "--out")
    if args.make:
        make(bundle, args.checkpoint, args.quiet)
    if args.text is None:
        return 0
    from gptedge.inside import figures
    from gptedge.runtime import contract, load

    manifest = contract.read_manifest(bundle)
    name = next((n for n, v in manifest.variants.items() if v.inspection is not None), None)
    if name is None:
        raise UserError(f"{bundle} has no inspection variant: add it with gptedge inspect --make {args.bundle}")
    shape = manifest.model
    for flag, value, limit in (("--layer", args.layer, shape.n_layer), ("--head", args.head, shape.n_head)):
        if value is not None and value >= limit:
            raise UserError(f"{flag} {value} is out of range: this model has {limit} (0 to {limit - 1})")
    seen = load(bundle, variant=name).inspect(args.text, k=args.top)
    layers = [args.layer] if args.layer is not None else list(range(shape.n_layer))
    heads = [args.head] if args.head is not None else list(range(shape.n_head))
    written = []
    table = figures.lens_table(seen)
    try:
        for layer in layers:
            suffix = f"_head{args.head}" if args.head is not None else ""
            written.append(figures.attention_png(seen, layer, heads, out / f"attention_layer{layer}{suffix}.png"))
        atomic.write_text(out / "lens.txt", table + "\n")
    except OSError as e:  # a folder that could not be made after all (/proc), a full disk
        raise write_error(e, out, "run it again") from None
    print(f"each layer's top guesses for the token after {figures.label(seen.tokens[-1])!r}:")
    print(table)
    print(f"wrote {len(written)} heatmap(s) and lens.txt to {out}", file=sys.stderr)
    return 0


def make(bundle: Path, checkpoint: str | None, quiet: bool) -> None:
    from gptedge.arguments import require

    require("torch", "export")
    from gptedge.export.inspection import make_inspection_variant

    if checkpoint is None:  # the run folder's checkpoint, as gptedge build lays it out
        checkpoint = str(bundle.parent / paths.CHECKPOINT_DIR)
        if not (Path(checkpoint) / paths.CHECKPOINT_FILE).is_file():
            raise UserError(f"no checkpoint beside {bundle} (looked in {checkpoint}): pass --checkpoint DIR, "
                            "the checkpoint the bundle was exported from")
    result = make_inspection_variant(bundle, paths.resolve_checkpoint(checkpoint), quiet=quiet)
    f = result.variant.inspection
    print(f"added {result.variant.file} to {bundle}: attention within {f.max_attention_diff:.1e} of PyTorch's, "
          f"hidden states {f.max_hidden_diff:.1e}, logits {f.max_logit_diff_vs_fp32:.1e} of the fp32 variant's",
          file=sys.stderr)
