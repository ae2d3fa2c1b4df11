"""``gptedge export``, ``verify``, ``optimize``, ``quantize`` and ``eval``. Nothing heavy is imported
until a command runs.

Each takes what the command before it wrote: a checkpoint argument may be the run folder that
``gptedge train --out`` made, a bundle argument the run folder holding ``bundle/``. The front end
resolves them (``gptedge.paths``), so the library functions stay strict about what they get.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gptedge.arguments import BUNDLE_HELP, CHECKPOINT_HELP, require, thread_count, whole_number
from gptedge.errors import UserError
from gptedge.paths import output_folder, resolve_bundle, resolve_checkpoint


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export",
        help="export a checkpoint to an ONNX bundle, checked against PyTorch",
        description="Export CHECKPOINT_DIR to a bundle folder OUT_DIR (model.onnx with a KV cache, "
        "tokenizer.json, manifest.json). The bundle is written only if the parity gate passes: "
        "onnxruntime must match PyTorch on held-out text.",
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT_DIR", help=CHECKPOINT_HELP)
    p.add_argument("out", metavar="OUT_DIR", help="the bundle folder to create")
    p.add_argument("--force", action="store_true", help="replace OUT_DIR if it is an existing bundle")
    p.add_argument("--text", metavar="FILE", help="held-out text for the parity gate (default: the "
                   "checkpoint's held-out split when it was trained on the default corpus)")
    p.add_argument("--external-data", action="store_true",
                   help="keep the weights in model.onnx.data (automatic above 2 GB)")
    p.add_argument("--chat-template", metavar="FILE",
                   help="a chat model's template (Jinja, as in Hugging Face's tokenizer_config.json): the bundle "
                   "then answers chat messages (default: the one gptedge import took over, if any)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    p.set_defaults(func=run_export)

    v = subparsers.add_parser(
        "verify",
        help="check a bundle's files and run the parity gate on it",
        description="Check BUNDLE's format and hashes, then run the parity gate: the graph's own "
        "checks (cached vs full, batch vs single), and with --checkpoint also onnxruntime vs PyTorch.",
    )
    v.add_argument("bundle", metavar="BUNDLE", help=BUNDLE_HELP)
    v.add_argument("--checkpoint", metavar="DIR", help="the checkpoint the bundle was exported from (or its run folder)")
    v.add_argument("--text", metavar="FILE", help="held-out text (default: as for export)")
    v.set_defaults(func=run_verify)

    o = subparsers.add_parser(
        "optimize",
        help="fuse a bundle's fp32 graph for onnxruntime (checked for parity, replaced atomically)",
        description="Fuse BUNDLE's fp32 graph with onnxruntime's fusions (SkipLayerNormalization, "
        "BiasGelu, attention as GroupQueryAttention over a preallocated KV cache), check its logits "
        "against the original graph "
        "and only then replace it. Prints the op counts before and after. Running it twice does nothing.",
    )
    o.add_argument("bundle", metavar="BUNDLE", help=BUNDLE_HELP)
    o.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    o.set_defaults(func=run_optimize)
    register_quantize(subparsers)


def run_export(args: argparse.Namespace) -> int:
    require("onnxscript", "export")
    from gptedge.export.bundle import export_bundle
    from gptedge.export.parity import summary

    template = read_template(args.chat_template) if args.chat_template is not None else None
    result = export_bundle(resolve_checkpoint(args.checkpoint), args.out, force=args.force, text_file=args.text,
                           external_data=True if args.external_data else None, quiet=args.quiet,
                           chat_template=template)
    fp32 = result.manifest.variants["fp32"]
    size = fp32.total_bytes
    print(f"wrote {result.bundle} ({size / 1e6:.1f} MB) in {result.seconds:.1f} s; "
          f"parity: {summary(result.manifest.parity)}")
    return 0


def read_template(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"--chat-template {path} does not exist: give the template's file") from None
    except UnicodeDecodeError:
        raise UserError(f"--chat-template {path} is not UTF-8 text: give a Jinja template file") from None
    except OSError as e:
        raise UserError(f"cannot read --chat-template {path} ({e.strerror or e}): check the file") from None


def run_verify(args: argparse.Namespace) -> int:
    require("torch", "export")
    from gptedge.export.bundle import verify_bundle
    from gptedge.export.parity import summary

    bundle = resolve_bundle(args.bundle)
    checkpoint = resolve_checkpoint(args.checkpoint) if args.checkpoint else None
    figures = verify_bundle(bundle, checkpoint, args.text)
    print(f"{bundle}: files match their hashes; parity: {summary(figures)}")
    return 0


def run_optimize(args: argparse.Namespace) -> int:
    require("onnxscript", "export")
    from gptedge.export.optimize import optimize_bundle, report

    print(report(optimize_bundle(resolve_bundle(args.bundle), quiet=args.quiet)))
    return 0


def register_quantize(subparsers: argparse._SubParsersAction) -> None:
    """``gptedge quantize`` and ``gptedge eval`` (export/quantize*.py, export/evaluate.py)."""
    q = subparsers.add_parser(
        "quantize",
        help="add an int8, int4, fp16 or int8-static variant to a bundle",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Add a quantized variant of BUNDLE's fp32 graph: a new file beside it, the fp32 variant\n"
        "stays. The manifest lists it only once the new graph has loaded and run.\n\n"
        "precisions (--to):\n"
        "  int8         dynamic int8 matmuls, per-channel weights; for CPUs (7-bit weights on x86 without VNNI)\n"
        "               (--int8-format blocks: 8-bit MatMulNBits blocks, faster decode, slower prefill)\n"
        "  int4         4-bit weight blocks of up to 128 (MatMulNBits), output head and token table at 4 bits\n"
        "               (--head-bits 8: closer to fp32, larger); for CPUs\n"
        "  fp16         half precision with a float16 KV cache; for GPU providers (cuda, directml, webgpu)\n"
        "  int8-static  QDQ graph calibrated on held-out text; the format of NPU providers (qnn, nnapi)\n\n"
        "targets (--target), the precisions they add:\n"
        "  cpu     int8 and int4\n"
        "  gpu     fp16\n"
        "  mobile  int8 (onnxruntime's mobile packages run it on the phone's CPU)\n"
        "  npu     int8-static\n\n"
        "Then measure what each variant costs and gains with: gptedge eval BUNDLE",
    )
    q.add_argument("bundle", metavar="BUNDLE", help=BUNDLE_HELP)
    which = q.add_mutually_exclusive_group(required=True)
    which.add_argument("--to", metavar="PRECISION", help="int8, int4, fp16 or int8-static")
    which.add_argument("--target", metavar="TARGET", help="cpu, gpu, mobile or npu: the precisions listed above")
    q.add_argument("--head-bits", type=int, choices=(4, 8), default=None,
                   help="int4 only: bits of the output head and the token table it shares (default: "
                   "4, the smaller file; 8 keeps the logits closer to fp32)")
    q.add_argument("--int8-format", choices=("per-channel", "blocks"), default=None,
                   help="int8 only: per-channel (default: MatMulInteger, the faster first token) or blocks "
                   "(8-bit MatMulNBits, as onnxruntime-genai's int8: faster decode on AVX-512 CPUs, slower prefill)")
    q.add_argument("--text", metavar="FILE", help="calibration text for int8-static (default: the held-out "
                   "split of the default corpus)")
    q.add_argument("--force", action="store_true", help="replace a variant the bundle already has")
    q.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    q.set_defaults(func=run_quantize)

    e = subparsers.add_parser(
        "eval",
        help="measure every variant of a bundle: perplexity, agreement with fp32, size, speed",
        description="One harness for every variant of BUNDLE (and a PyTorch checkpoint with "
        "--checkpoint): held-out perplexity over full context windows (the same tokens for all), the "
        "largest logit difference and top-1 agreement with fp32, greedy agreement over generated "
        "tokens, file size, load time, time to first token and decode tokens/s through the runtime. "
        "Writes a table, eval.json, eval.md and eval.png, and the figures into the manifest.",
    )
    e.add_argument("bundle", metavar="BUNDLE", help=BUNDLE_HELP)
    e.add_argument("--text", metavar="FILE", help="held-out text (default: the held-out split of the default corpus)")
    e.add_argument("--checkpoint", metavar="DIR", help="the checkpoint the bundle came from (or its run folder), "
                   "measured alongside")
    e.add_argument("--out", metavar="DIR", help="where to write the reports (default: BUNDLE/eval)")
    e.add_argument("--provider", default="auto", help="execution provider for generation and speed (default: "
                   "auto, per variant as the runtime picks; quality figures always run on cpu)")
    e.add_argument("--threads", type=thread_count, default=None, help="onnxruntime intra-op threads (default: one per core)")
    e.add_argument("--new-tokens", type=whole_number(1), default=128, help="greedy tokens generated per prompt (default 128)")
    e.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    e.set_defaults(func=run_eval)


def run_quantize(args: argparse.Namespace) -> int:
    require("onnx", "export")
    from gptedge.export.quantize import Choices, precisions_for, quantize_bundle, report

    results = quantize_bundle(resolve_bundle(args.bundle), precisions_for(args.to, args.target), text_file=args.text,
                              force=args.force, quiet=args.quiet,
                              choices=Choices(head_bits=args.head_bits, int8_format=args.int8_format))
    print(report(results))
    return 0


def run_eval(args: argparse.Namespace) -> int:
    bundle = resolve_bundle(args.bundle)
    checkpoint = resolve_checkpoint(args.checkpoint) if args.checkpoint else None
    if args.out:
        output_folder(args.out, "--out")
    if args.checkpoint:
        require("torch", "export")
    from gptedge.export.evaluate import evaluate_bundle
    from gptedge.measure.eval_report import format_table

    result = evaluate_bundle(bundle, text_file=args.text, checkpoint_dir=checkpoint, out_dir=args.out,
                             provider=args.provider, threads=args.threads, new_tokens=args.new_tokens,
                             quiet=args.quiet)
    print(format_table(result.report))
    print(f"wrote {', '.join(str(p) for p in result.files)} and the figures into {bundle / 'manifest.json'}")
    return 0
