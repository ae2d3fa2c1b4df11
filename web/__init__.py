"""``gptedge web``: the model in the browser. ``site.py`` assembles a static folder (the page's
JavaScript from ``web/js``, onnxruntime-web's files from its npm package, the variant's graph,
``tokenizer.json`` and ``web.json``) with the package writer; ``cli.py`` is the command, with
``--serve`` for a quick look on 127.0.0.1. The JavaScript (tokenizer, sampling, generation loop,
page) lives in ``web/js`` with its own tests (``npm test``)."""
