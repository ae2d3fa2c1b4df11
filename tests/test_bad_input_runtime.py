"""Bad input to the runtime's public functions: each is a ``UserError`` whose one-line message names
the problem, never a TypeError, an onnxruntime error or a silently wrong answer, and the bundle is
left exactly as it was.

The catalogue is the parametrize lists below; every entry is a mistake a user can make by hand
(a typo, a value from JSON, a command line in the wrong encoding)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

import gptedge.runtime
from gptedge.errors import UserError, check_text
from gptedge.runtime.next_token import next_token_candidates, token_probabilities
from gptedge.runtime.sampling import Sampler
from gptedge.runtime.settings import GenerationSettings

V = 512  # the test model's vocabulary (fixtures_model.TEST_MODEL)


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def model(tiny_bundle):
    return gptedge.runtime.load(tiny_bundle, provider="cpu", threads=1)


@pytest.fixture
def untouched(tiny_bundle, capfd):
    """The bundle's files are the same after the test, and nothing printed a traceback."""
    before = digest(tiny_bundle)
    yield
    assert digest(tiny_bundle) == before
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err


def refused(call, match: str) -> str:
    with pytest.raises(UserError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and match in message, message
    assert ":" in message  # problem: fix
    return message


SETTINGS = [
    (dict(temperature=-1), "temperature=-1"),
    (dict(temperature=float("nan")), "temperature=nan"),
    (dict(temperature=float("inf")), "temperature=inf"),
    (dict(temperature="hot"), "temperature='hot'"),
    (dict(top_p=2), "top_p=2"),
    (dict(top_p=0), "top_p=0"),
    (dict(top_k=1.5), "top_k=1.5"),
    (dict(top_k=-1), "top_k=-1"),
    (dict(max_new_tokens=-3), "max_new_tokens=-3"),
    (dict(max_new_tokens="5"), "max_new_tokens='5'"),
    (dict(max_new_tokens=True), "max_new_tokens=True"),
    (dict(repetition_penalty=0), "repetition_penalty=0"),
    (dict(seed=-1), "seed=-1"),
    (dict(seed=1.5), "seed=1.5"),
    (dict(seed="1"), "seed='1'"),
    (dict(stop=[1]), "stop=(1,)"),
    (dict(stop=5), "stop=5"),
    (dict(stop=b"ab"), "stop=b'ab'"),
    (dict(stop=["ok", ""]), "stop=('ok', '') is invalid: use a string or a list of strings, none of them empty"),
    (dict(stop=["ok", "\udcff"]), "byte 0xff"),
    (dict(ignore_eos="yes"), "ignore_eos='yes'"),
    (dict(temprature=0.5), "unknown generation setting temprature"),
]


@pytest.mark.slow
@pytest.mark.parametrize("call", ["generate", "stream"])
@pytest.mark.parametrize("overrides, match", SETTINGS, ids=[m for _, m in SETTINGS])
def test_bad_generation_settings(model, untouched, call, overrides, match):
    refused(lambda: getattr(model, call)("The for statement", **overrides), match)


PROMPTS = [
    (5, "the prompt is of type int"),
    (None, "of type NoneType"),
    (b"abc", "the prompt is bytes"),
    ({"a"}, "of type set"),
    ([1.5], "list holding float"),
    ([True], "bool"),
    (np.array([1.0]), "1-D float64 array"),
    ([-1], "not -1"),
    ([V], f"not {V}"),
    ([[1, 2], [-3]], "not -3"),
    ("\udcff\udcfe", "byte 0xff at character 0"),
    ("ab\ud83d", "lone surrogate U+D83D at character 2"),
]


@pytest.mark.slow
@pytest.mark.parametrize("prompt, match", PROMPTS, ids=[m for _, m in PROMPTS])
def test_bad_prompts(model, untouched, prompt, match):
    refused(lambda: model.generate(prompt, max_new_tokens=2), match)
    if not isinstance(prompt, list) or not isinstance(prompt[0], list):  # a batch is generate's only
        refused(lambda: model.stream(prompt, max_new_tokens=2), match)  # at the call, not at the first piece


@pytest.mark.slow
def test_empty_prompts(model, untouched):
    refused(lambda: model.stream([]), "empty list of token ids")
    assert model.generate([]) == []  # an empty batch: no rows, no results
    assert model.generate("", max_new_tokens=1).stop_reason in ("eos", "length")  # '' starts a document


@pytest.mark.slow
@pytest.mark.parametrize("call, match", [
    (lambda m: m.encode(5), "encode got int"),
    (lambda m: m.encode("x\udc80"), "byte 0x80 at character 1"),
    (lambda m: m.decode("ab"), "of type str"),
    (lambda m: m.decode([-1]), "not -1"),
    (lambda m: m.decode([10**6]), "not 1000000"),
    (lambda m: m.generate("x", {"temperature": 0}), "settings must be a GenerationSettings, not dict"),
    (lambda m: next_token_candidates(m.decoder, m.tokenizer, [1, 2], k=0), "k=0"),
    (lambda m: next_token_candidates(m.decoder, m.tokenizer, [V]), f"not {V}"),
    (lambda m: next_token_candidates(m.decoder, m.tokenizer, []), "the text is empty"),
    (lambda m: token_probabilities(m.decoder, [1, 2, 3], start=0), "start=0"),
    (lambda m: token_probabilities(m.decoder, [1, 2, V], start=1), f"not {V}"),
], ids=["encode-int", "encode-surrogate", "decode-str", "decode-negative", "decode-too-big", "settings-dict",
        "candidates-k0", "candidates-bad-id", "candidates-empty", "probabilities-start0", "probabilities-bad-id"])
def test_bad_arguments_to_other_runtime_functions(model, untouched, call, match):
    refused(lambda: call(model), match)


@pytest.mark.parametrize("kwargs, match", [
    (dict(temperature=-1), "temperature=-1"),
    (dict(top_k=-2), "top_k=-2"),
    (dict(seed=-5), "seed=-5"),
], ids=["temperature", "top_k", "seed"])
def test_sampler_checks_its_settings(kwargs, match):
    refused(lambda: Sampler(**kwargs), match)


def test_good_settings_still_pass():
    """The checks refuse only mistakes: every documented form is accepted."""
    s = GenerationSettings(stop="END", seed=0, temperature=0, top_p=1.0, max_new_tokens=0)
    assert s.stop == ("END",)
    assert GenerationSettings(stop=["a", "é😀"], seed=np.int64(3), top_k=np.int32(5)).stop == ("a", "é😀")
    assert Sampler(temperature=0.5, top_k=3, seed=2).top_k == 3


@pytest.mark.parametrize("text, match", [
    ("\udcff", "not valid UTF-8 (byte 0xff at character 0)"),
    ("ok \udc80", "byte 0x80 at character 3"),
    ("\ud800x", "lone surrogate U+D800 at character 0"),
], ids=["escaped-byte", "escaped-byte-later", "high-surrogate"])
def test_check_text_names_the_bad_character(text, match):
    message = refused(lambda: check_text(text, "the prompt"), match)
    message.encode("utf-8")  # printable anywhere: the bad character is named, not echoed
    assert check_text("é 中 😀", "the prompt") == "é 中 😀"


@pytest.mark.parametrize("kwargs,match", [
    (dict(bundle_dir=None), "load\\(\\) takes the bundle's folder as a str or Path, not NoneType"),
    (dict(bundle_dir=5), "not int"),
    (dict(provider=3), "provider=3 is invalid"),
    (dict(variant=["int8"]), "variant=\\['int8'\\] is invalid"),
    (dict(threads=True), "threads=True is invalid"),
    (dict(threads=0), "threads=0 is invalid"),
], ids=["bundle-none", "bundle-int", "provider-int", "variant-list", "threads-bool", "threads-zero"])
def test_bad_arguments_to_load(tiny_bundle, kwargs, match):
    args = {"bundle_dir": tiny_bundle, **kwargs}
    with pytest.raises(UserError, match=match):
        gptedge.runtime.load(**args)
