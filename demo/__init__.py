"""The demo page (``gptedge demo``): a Gradio app over ``gptedge.runtime``, nothing else of gptedge.

Like the runtime it never imports torch, gptedge.train or gptedge.export: it runs wherever a bundle
and onnxruntime do, with gradio added.
"""
