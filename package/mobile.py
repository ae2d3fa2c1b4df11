"""The ``mobile`` target: ORT-format files for onnxruntime's Android and iOS packages and reduced builds.

Phones run onnxruntime's mobile packages (``onnxruntime-android``, ``onnxruntime-c`` /
``onnxruntime-objc`` pods, ``onnxruntime-react-native``) or a custom build cut down to the
operators a model uses. Both load the ORT format (a flatbuffer, already optimized, no protobuf
parser needed), made by onnxruntime's own converter for an ARM target. Alongside:
- ``required_operators.config``: the operators of every file here, the input of a reduced
  onnxruntime build (``build.sh --minimal_build --include_ops_by_config``);
- ``mobile_usability.md``: onnxruntime's usability checker per variant: how many nodes NNAPI
  (Android) and CoreML (iOS) would take, as the graph is and with fixed shapes. Our graphs'
  quantized and attention operators are com.microsoft contrib ops that neither supports, so phones
  run them on the CPU provider (which XNNPACK cannot improve: it has no kernels for them either).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import onnx


from gptedge import logs
from gptedge.package import hf, older
from gptedge.package.folder import Folder, Plan, Source
from gptedge.runtime import contract

TITLE = "onnxruntime mobile (Android, iOS, React Native, reduced builds)"
OPERATORS_FILE = "required_operators.config"
REPORT_FILE = "mobile_usability.md"
# The converter writes ORT format version 6 (``ORT_FORMAT``), which onnxruntime reads from 1.16 on
# (its maintainers, onnxruntime issue 20670); a variant's operators usually need a newer one.
ORT_FORMAT, ORT_FORMAT_FLOOR = "6", "1.16"
ONNXRUNTIME = "1.24"  # what the phone packages ship, the oldest first (onnxruntime-react-native 1.24)
# what the usability checker covers: (provider, checker function, CoreML operator list or None)
PROVIDERS = (("NNAPI", "nnapi", None), ("CoreML NeuralNetwork", "coreml", "coreml_supported_neuralnetwork_ops.md"),
             ("CoreML MLProgram", "coreml", "coreml_supported_mlprogram_ops.md"))


def ort_name(file: str) -> str:
    return str(Path(file).with_suffix(".ort"))


def plan(source: Source) -> Plan:
    folder = Folder("", texts=hf.tokenizer_files(source), links=hf.tokenizer_link(source))
    for name in source.variants:
        v = source.manifest.variants[name]
        if "cpu" not in v.providers:
            folder.notes.append(f"{name} left out: it is meant for {', '.join(v.providers)}; phones run these "
                                "graphs on the CPU provider")
            continue
        if v.data_file:
            folder.notes.append(f"{name} left out: the ORT format holds no external data (weights over 2 GB)")
            continue
        graph, needs, rewrite = source.file(v.file), v.min_onnxruntime, False
        if not older.runs_on(needs, ONNXRUNTIME) and (older_needs := older.older_form(graph, ONNXRUNTIME)):
            needs, rewrite = older_needs, True
            folder.notes.append(older.note(name, needs))
        if _has_4bit_tensors(graph):
            folder.variants[name] = dataclasses.replace(v, min_onnxruntime=needs)
            if rewrite:
                folder.makers[v.file] = lambda path, graph=graph: older.write_older_form(graph, path)
            else:
                folder.links[v.file] = graph
            folder.notes.append(f"{name} kept as .onnx: the ORT format has no 4-bit tensor type (onnxruntime "
                                "refuses such a file); the full mobile packages load .onnx, a reduced build cannot")
            continue
        needs = max(needs, ORT_FORMAT_FLOOR, key=contract.version_tuple)
        folder.variants[name] = dataclasses.replace(v, file=ort_name(v.file), min_onnxruntime=needs)
        folder.makers[ort_name(v.file)] = _converter(graph, rewrite)
    if not folder.variants:
        return Plan("mobile", TITLE, [], notes=folder.notes)
    folder.makers[OPERATORS_FILE] = _operators
    sources = {name: source.file(source.manifest.variants[name].file) for name in folder.variants}
    folder.makers[REPORT_FILE] = lambda path: path.write_text(usability_report(sources), encoding="utf-8")
    folder.notes.append("onnxruntime needed per file: " + ", ".join(
        f"{v.file} >= {v.min_onnxruntime}" for v in folder.variants.values()))
    first = next(iter(folder.variants.values())).file
    return Plan("mobile", TITLE, [folder], usage=USAGE.replace("FILE", first))


def _has_4bit_tensors(onnx_file: Path) -> bool:
    """Whether the graph stores 4-bit weights as such (int4's token table, GatherBlockQuantized):
    the converter writes them, but onnxruntime then refuses the .ort file ("Unsupported tensor data
    type"). MatMulNBits packs its 4-bit weights into uint8 and converts fine."""
    four_bit = {onnx.TensorProto.INT4, onnx.TensorProto.UINT4}
    graph = onnx.load(str(onnx_file), load_external_data=False).graph
    return any(t.data_type in four_bit for t in graph.initializer)


def _converter(onnx_file: Path, rewrite: bool) -> Callable[[Path], None]:
    def convert(path: Path) -> None:
        """onnxruntime's converter, as its documentation runs it for phones (ARM target, fixed
        optimizations), into a scratch folder (from the rewritten graph, with ``rewrite``); its
        ``.ort`` file is then moved into place."""
        from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

        with tempfile.TemporaryDirectory(dir=path.parent) as scratch, contextlib.redirect_stdout(io.StringIO()), \
                logs.quiet("ort_format_model.utils"):
            graph = Path(scratch) / onnx_file.name
            if rewrite:
                older.write_older_form(onnx_file, graph)
            else:
                graph.symlink_to(onnx_file.resolve())
            convert_onnx_models_to_ort(graph, output_dir=Path(scratch) / "out", target_platform="arm",
                                       optimization_styles=[OptimizationStyle.Fixed])
            shutil.move(Path(scratch) / "out" / graph.with_suffix(".ort").name, path)

    return convert


def _operators(path: Path) -> None:
    """``required_operators.config`` for every ``.ort`` file beside it, naming them by file name."""
    from onnxruntime.tools.ort_format_model.utils import create_config_from_models

    models = sorted(path.parent.glob("*.ort"))  # .onnx files here are for full builds, not reduced ones
    with logs.quiet("ort_format_model.utils"):
        create_config_from_models(models, path, enable_type_reduction=False)
    text = path.read_text(encoding="utf-8")
    for model in models:
        text = text.replace(str(model), model.name)  # the converter writes absolute (staging) paths
    path.write_text(text, encoding="utf-8")


def usability_report(sources: dict[str, Path]) -> str:
    """Markdown: per variant and mobile provider, the nodes it would run (onnxruntime's checker)."""
    lines = ["# Mobile execution providers", "",
             "From onnxruntime's usability checker (`python -m onnxruntime.tools.check_onnx_model_mobile_usability`), "
             "on each variant's graph after basic optimizations. Nodes a provider does not take run on the CPU "
             "provider; many partitions mean many copies between the two. XNNPACK is not covered by the checker "
             "(it has kernels for none of the com.microsoft operators these graphs use).", "",
             "| variant | provider | nodes it takes | partitions | with fixed shapes | operators it lacks |",
             "|---|---|---|---|---|---|"]
    for name, path in sources.items():
        for provider, nodes, partitions, fixed, lacking in _check(path):
            lines.append(f"| {name} | {provider} | {nodes} | {partitions} | {fixed} | {lacking} |")
    return "\n".join(lines) + "\n"


def _check(path: Path):
    from onnxruntime.tools.mobile_helpers import usability_checker as uc
    from onnxruntime.tools.onnx_model_utils import ModelProtoWithShapeInfo, optimize_model

    with tempfile.TemporaryDirectory() as scratch:
        optimized = Path(scratch) / path.name
        optimize_model(path, optimized, use_external_initializers=True)
        model = ModelProtoWithShapeInfo(optimized).model_with_shape_info
        for provider, kind, ops in PROVIDERS:
            def check(fixed: bool) -> "uc.PartitioningInfo":
                if kind == "nnapi":
                    return uc.check_nnapi_partitions(model, require_fixed_input_sizes=not fixed)
                return uc.check_coreml_partitions(model, not fixed, ops)

            as_is, fixed = check(False), check(True)
            lacking = ", ".join(sorted(as_is.unsupported_ops)) or "-"
            yield (provider, f"{as_is.num_supported_nodes}/{as_is.num_nodes}", as_is.num_partitions,
                   f"{fixed.num_supported_nodes}/{fixed.num_nodes}", lacking)


USAGE = """Kotlin (Android, `com.microsoft.onnxruntime:onnxruntime-android`):
```kotlin
val env = OrtEnvironment.getEnvironment()
val session = env.createSession(File(dir, "FILE").path, OrtSession.SessionOptions())
```
Swift (iOS, `onnxruntime-objc` pod): `let session = try ORTSession(env: env, modelPath: dir + "/FILE", sessionOptions: nil)`.
The generation loop is gptedge's (`runtime/generation.py`, the porting spec in docs/DESIGN.md): feed
`input_ids`, `attention_mask`, `position_ids` and the past, read `logits` and the present."""
