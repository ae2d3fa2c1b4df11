"""``gptedge import``: existing GPT-2 weights as a gptedge checkpoint, with identical outputs, offline.

Two sources are understood:

* a Hugging Face GPT-2 folder: ``config.json`` + ``model.safetensors`` (or ``pytorch_model.bin``),
  and its tokenizer (``tokenizer.json``, or GPT-2's ``vocab.json`` + ``merges.txt``). GPT-2 stores
  its projections as Conv1D, whose weight is the transpose of ``nn.Linear``'s, and uses the tanh GELU.
* a nanoGPT ``ckpt.pt``: ``model_args`` and the ``model`` state dict (``_orig_mod.`` prefixes from
  torch.compile stripped). nanoGPT uses nn.Linear and the exact GELU, and saves no tokenizer, so one
  must be given.

Both name their tensors like our GPT under a ``transformer.`` prefix; only the prefix, the Conv1D
transposes and the tied output head need care.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

from gptedge import atomic
from gptedge.errors import UserError, write_error
from gptedge.train.checkpoint import TIED_KEY, load_exact, save_checkpoint
from gptedge.train.checkpoint_config import FORMAT, TOKENIZER_FILE, ImportRecord
from gptedge.train.config import GPTConfig, TrainConfig
from gptedge.train.model import GPT
from gptedge.train.tokenizer import EOS_TOKEN

HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
CONV1D_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# Buffers some GPT-2 implementations save: the causal mask and its fill value, not weights.
MASK_BUFFERS = (".attn.bias", ".attn.masked_bias")
HF_GELU = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu_fast": "tanh", "gelu": "exact"}


def import_weights(source: str | Path, out: str | Path, tokenizer: str | Path | None = None) -> Path:
    """Convert ``source`` into the checkpoint folder ``out`` (built aside, moved into place whole)."""
    source, out = Path(source), Path(out)
    atomic.remove_leftovers(out.parent, out.name)  # a staged folder of an import that was killed
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out {out} already exists and is not empty: choose a new folder")
    if not source.exists():
        raise UserError(f"{source} does not exist: point at a Hugging Face GPT-2 folder or a nanoGPT ckpt.pt")
    chat_template = None
    if source.is_dir() and (source / "config.json").is_file():
        config, state, tok, origin = _read_hf(source, tokenizer)
        chat_template = _hf_chat_template(source)
    elif source.is_file() or (source / "ckpt.pt").is_file():
        ckpt = source if source.is_file() else source / "ckpt.pt"
        config, state, tok, origin = _read_nanogpt(ckpt, tokenizer)
    else:
        raise UserError(
            f"{source} is neither a Hugging Face GPT-2 folder (config.json + model.safetensors) nor a "
            f"nanoGPT ckpt.pt: point at one of those"
        )
    if tok.get_vocab_size() > config.vocab_size:
        raise UserError(
            f"the tokenizer has {tok.get_vocab_size()} tokens but the model only {config.vocab_size}: "
            f"give the tokenizer the model was trained with"
        )
    if tok.token_to_id(EOS_TOKEN) is None:
        raise UserError(f"the tokenizer has no {EOS_TOKEN} token: give the tokenizer the model was trained with")
    model = _build(config, state)
    train = TrainConfig(vocab_size=tok.get_vocab_size(), seq_len=min(TrainConfig.seq_len, config.context_length))
    try:
        with atomic.staged_dir(out) as stage:
            tok.save(str(stage / TOKENIZER_FILE))
            save_checkpoint(stage, model, train, step=0, preset="imported", imported_from=origin,
                            chat_template=chat_template)
    except FileExistsError:
        raise UserError(f"--out {out} appeared while importing: choose a new folder") from None
    except OSError as e:
        raise write_error(e, out, "import again") from None
    return out


def _gpt_config(where: Path, **settings: Any) -> GPTConfig:
    """The model shape a source declares, or one line naming the file and the bad setting."""
    try:
        return GPTConfig(**settings)
    except UserError as e:
        raise UserError(f"{where} does not describe a usable GPT ({e}): check the file") from None


def _tensors(state: Any, where: Path) -> dict[str, torch.Tensor]:
    """A state dict as the importers need it: names to tensors, nothing else."""
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise UserError(f"the weights in {where} are not a state dict of named tensors: check the file")
    return state


def _build(config: GPTConfig, state: dict[str, torch.Tensor]) -> GPT:
    """Load ``state`` (our names) into a GPT, refusing anything that does not fit exactly."""
    head = state.pop(TIED_KEY, None)
    if head is not None and not torch.equal(head, state.get("wte.weight", head)):
        raise UserError("the checkpoint's output head is not tied to its token embedding: gptedge needs tied weights")
    return load_exact(config, {k: v.float() for k, v in state.items()}, "the weights do not match a GPT-2 of this shape",
                      "only GPT-2-style models can be imported")


def _strip(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in state.items():
        k = k.removeprefix("_orig_mod.").removeprefix(prefix)
        if not k.endswith(MASK_BUFFERS):
            out[k] = v
    return out


# ---------------------------------------------------------------------------------------------------
# Hugging Face GPT-2 folders.


def _read_hf(folder: Path, tokenizer: str | Path | None) -> tuple[GPTConfig, dict, Tokenizer, ImportRecord]:
    try:
        hf = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{folder / 'config.json'} is not valid JSON ({e}): re-download the model") from None
    if not isinstance(hf, dict):
        raise UserError(f"{folder / 'config.json'} holds {type(hf).__name__}, not an object: it is not a GPT-2 config")
    if hf.get("format") == FORMAT:
        raise UserError(f"{folder} is already a gptedge checkpoint: export it (gptedge export {folder} OUT), "
                        "no import needed")
    if hf.get("model_type") != "gpt2":
        raise UserError(f"{folder} holds a {hf.get('model_type')!r} model, not GPT-2: only GPT-2 can be imported")
    missing = [k for k in ("vocab_size", "n_positions", "n_layer", "n_head", "n_embd") if k not in hf]
    if missing:
        raise UserError(f"{folder / 'config.json'} lacks {', '.join(missing)}: it is not a GPT-2 config")
    activation = hf.get("activation_function", "gelu_new")
    gelu = HF_GELU.get(activation) if isinstance(activation, str) else None
    unsupported = [
        name for name, bad in (
            ("activation_function", gelu is None),
            ("n_inner", isinstance(hf["n_embd"], int) and hf.get("n_inner") not in (None, 4 * hf["n_embd"])),
            ("scale_attn_weights", not hf.get("scale_attn_weights", True)),
            ("scale_attn_by_inverse_layer_idx", hf.get("scale_attn_by_inverse_layer_idx", False)),
            ("tie_word_embeddings", not hf.get("tie_word_embeddings", True)),
        ) if bad
    ]
    if unsupported:
        raise UserError(f"{folder} uses GPT-2 options gptedge does not support ({', '.join(unsupported)})")
    config = _gpt_config(
        folder / "config.json", vocab_size=hf["vocab_size"], context_length=hf["n_positions"], n_layer=hf["n_layer"],
        n_head=hf["n_head"], n_embd=hf["n_embd"], gelu=gelu, layer_norm_eps=hf.get("layer_norm_epsilon", 1e-5),
    )
    weights = next((folder / n for n in HF_WEIGHTS if (folder / n).is_file()), None)
    if weights is None:
        raise UserError(f"{folder} has no model.safetensors: download the weights (safetensors) into it")
    state = _strip(_tensors(_load_hf_weights(weights), weights), "transformer.")
    for k in list(state):
        if k.endswith(CONV1D_WEIGHTS):  # Conv1D stores (in, out); nn.Linear wants (out, in)
            state[k] = state[k].t().contiguous()
    tok = _read_tokenizer(Path(tokenizer) if tokenizer else folder)
    return config, state, tok, ImportRecord("huggingface-gpt2", str(folder.resolve()))


def _hf_chat_template(folder: Path) -> str | None:
    """A chat model's template: ``chat_template.jinja``, or ``chat_template`` in
    ``tokenizer_config.json`` (a string, or named templates of which "default" is the one used)."""
    file, config = folder / "chat_template.jinja", folder / "tokenizer_config.json"
    try:
        if file.is_file():
            template = file.read_text(encoding="utf-8")
        elif config.is_file():
            settings = json.loads(config.read_text(encoding="utf-8"))
            if not isinstance(settings, dict):
                raise UserError(f"{config} holds {type(settings).__name__}, not an object: fix or remove it")
            template = settings.get("chat_template")
        else:
            return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"cannot read the chat template in {folder} ({e}): fix or remove it") from None
    if isinstance(template, list):  # [{"name": ..., "template": ...}, ...]
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    if template is None:
        return None
    if not isinstance(template, str) or not template.strip():
        raise UserError(f"{folder}'s chat_template is not a Jinja template: fix or remove it")
    return template  # compiled by gptedge export (the runtime renders it)


def _load_hf_weights(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # safetensors and torch raise many types for a damaged file
        raise UserError(f"cannot read {path} ({type(e).__name__}: {e}): re-download the weights") from None


# ---------------------------------------------------------------------------------------------------
# nanoGPT checkpoints.


def _read_nanogpt(path: Path, tokenizer: str | Path | None) -> tuple[GPTConfig, dict, Tokenizer, ImportRecord]:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a file that is not its pickle (zip, EOF, ...)
        raise UserError(f"cannot read {path} as a nanoGPT checkpoint ({type(e).__name__}): check the file") from None
    if not isinstance(ckpt, dict) or "model_args" not in ckpt or "model" not in ckpt:
        raise UserError(f"{path} is not a nanoGPT checkpoint (no 'model_args' and 'model'): check the file")
    args = ckpt["model_args"]
    if not isinstance(args, dict):
        raise UserError(f"model_args in {path} is a {type(args).__name__}, not a dict: it is not a nanoGPT checkpoint")
    missing = [k for k in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd") if k not in args]
    if missing:
        raise UserError(f"{path} lacks model_args {', '.join(missing)}: it is not a nanoGPT GPT checkpoint")
    config = _gpt_config(
        path, vocab_size=args["vocab_size"], context_length=args["block_size"], n_layer=args["n_layer"],
        n_head=args["n_head"], n_embd=args["n_embd"], bias=args.get("bias", True), gelu="exact",
    )
    if tokenizer is None:
        raise UserError(
            f"{path} holds no tokenizer: pass --tokenizer with the tokenizer.json it was trained with "
            f"(or, for GPT-2's vocabulary, a folder with vocab.json and merges.txt)"
        )
    state = _strip(_tensors(ckpt["model"], path), "transformer.")
    return config, state, _read_tokenizer(Path(tokenizer)), ImportRecord("nanogpt", str(path.resolve()))


# ---------------------------------------------------------------------------------------------------
# Tokenizers.


def _read_tokenizer(path: Path) -> Tokenizer:
    """A tokenizer.json file, or a folder with tokenizer.json or GPT-2's vocab.json + merges.txt."""
    file = path / TOKENIZER_FILE if path.is_dir() else path
    try:
        if file.is_file():
            return Tokenizer.from_file(str(file))
        if path.is_dir() and (path / "vocab.json").is_file() and (path / "merges.txt").is_file():
            return gpt2_tokenizer(path / "vocab.json", path / "merges.txt")
    except Exception as e:  # tokenizers raises a plain Exception for a malformed file
        raise UserError(f"cannot read the tokenizer in {path} ({e}): give a valid tokenizer.json") from None
    raise UserError(
        f"no tokenizer found at {path}: give a tokenizer.json, or a folder with tokenizer.json or "
        f"vocab.json + merges.txt"
    )


def gpt2_tokenizer(vocab: Path, merges: Path) -> Tokenizer:
    """GPT-2's byte-level BPE from its two files; <|endoftext|> (id 50256 in GPT-2) ends text and,
    as GPT-2 has no padding token, also pads."""
    tok = Tokenizer(models.BPE.from_file(str(vocab), str(merges)))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(EOS_TOKEN, special=True)])
    return tok
