"""Training: corpus, byte-level BPE tokenizer, the GPT model, the training loop and checkpoints.

    gptedge train [CORPUS] --out runs/tiny      # or gptedge.train.trainer.train(...)
    gptedge import SOURCE --out DIR              # Hugging Face GPT-2 or nanoGPT weights

A checkpoint is a folder (``checkpoint``): ``config.json`` (typed in ``checkpoint_config``, readable
without torch), ``tokenizer.json`` and the weights. This package knows nothing of ONNX; ``export``
builds on its model, and nothing here is needed at run time.
"""
