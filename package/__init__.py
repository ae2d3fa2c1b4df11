"""Packages: a bundle laid out so that another runtime loads it unmodified.

A gptedge bundle runs in ``gptedge.runtime``. Other runtimes want the same graphs with their own
side files and file names: onnxruntime-genai (``genai_config.json``; its C, C#, Java, Kotlin and
Swift packages behind phone apps), Hugging Face optimum (``config.json``), transformers.js
(``onnx/model{suffix}.onnx``) and onnxruntime's mobile builds (ORT-format files). Each target is a
module that *plans* its folders from the manifest (``folder.Folder``: files to link, side files to
write, graphs to convert, and a one-line note for each variant it leaves out or changes); one
writer (``folder.write_package``) stages, verifies and moves them into place, so every package is
also a valid gptedge bundle whose manifest lists exactly what it holds.
"""
