"""``gptedge export`` and ``gptedge verify``. Nothing heavy is imported until a command runs."""

from __future__ import annotations

import argparse

from gptedge.cli import require


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export",
        help="export a checkpoint to an ONNX bundle, checked against PyTorch",
        description="Export CHECKPOINT_DIR to a bundle folder OUT_DIR (model.onnx with a KV cache, "
        "tokenizer.json, manifest.json). The bundle is written only if the parity gate passes: "
        "onnxruntime must match PyTorch on held-out text.",
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT_DIR", help="a checkpoint folder from gptedge train or import")
    p.add_argument("out", metavar="OUT_DIR", help="the bundle folder to create")
    p.add_argument("--force", action="store_true", help="replace OUT_DIR if it is an existing bundle")
    p.add_argument("--text", metavar="FILE", help="held-out text for the parity gate (default: the "
                   "checkpoint's held-out split when it was trained on the default corpus)")
    p.add_argument("--external-data", action="store_true",
                   help="keep the weights in model.onnx.data (automatic above 2 GB)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    p.set_defaults(func=run_export)

    v = subparsers.add_parser(
        "verify",
        help="check a bundle's files and run the parity gate on it",
        description="Check BUNDLE's format and hashes, then run the parity gate: the graph's own "
        "checks (cached vs full, batch vs single), and with --checkpoint also onnxruntime vs PyTorch.",
    )
    v.add_argument("bundle", metavar="BUNDLE", help="a bundle folder from gptedge export")
    v.add_argument("--checkpoint", metavar="DIR", help="the checkpoint the bundle was exported from")
    v.add_argument("--text", metavar="FILE", help="held-out text (default: as for export)")
    v.set_defaults(func=run_verify)

    o = subparsers.add_parser(
        "optimize",
        help="fuse a bundle's fp32 graph for onnxruntime (checked for parity, replaced atomically)",
        description="Fuse BUNDLE's fp32 graph with onnxruntime's fusions (SkipLayerNormalization, "
        "BiasGelu, MultiHeadAttention with the KV cache), check its logits against the original graph "
        "and only then replace it. Prints the op counts before and after. Running it twice does nothing.",
    )
    o.add_argument("bundle", metavar="BUNDLE", help="a bundle folder from gptedge export")
    o.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    o.set_defaults(func=run_optimize)


def run_export(args: argparse.Namespace) -> int:
    require("onnxscript", "export")
    from gptedge.export.bundle import export_bundle
    from gptedge.export.parity import summary

    result = export_bundle(args.checkpoint, args.out, force=args.force, text_file=args.text,
                           external_data=True if args.external_data else None, quiet=args.quiet)
    fp32 = result.manifest.variants["fp32"]
    size = fp32.size_bytes + fp32.data_size_bytes
    print(f"wrote {result.bundle} ({size / 1e6:.1f} MB) in {result.seconds:.1f} s; "
          f"parity: {summary(result.manifest.parity)}")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    require("torch", "export")
    from gptedge.export.bundle import verify_bundle
    from gptedge.export.parity import summary

    figures = verify_bundle(args.bundle, args.checkpoint, args.text)
    print(f"{args.bundle}: files match their hashes; parity: {summary(figures)}")
    return 0


def run_optimize(args: argparse.Namespace) -> int:
    require("onnxscript", "export")
    from gptedge.export.optimize import optimize_bundle, report

    print(report(optimize_bundle(args.bundle, quiet=args.quiet)))
    return 0
