"""Text generation for self-rewarding correction: a small interface, transformers by default, vLLM when installed.

Everything in `trl_laser.correction` talks to a `Generator`: give it conversations (chat messages ending with a user
turn) and, optionally, the text the assistant has already written in its turn; get back `num_samples` continuations
per conversation with their token counts. Tests pass a fake one; real runs use `load_generator`.
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


logger = logging.getLogger(__name__)


@dataclass
class Completion:
    """One continuation.

    Attributes:
        text: the generated text; when a stop string ended it, the text ends with that stop string.
        num_tokens: tokens generated (including EOS or the stop string's tokens).
        finished: whether generation ended by itself (EOS or a stop string) rather than at the token limit.
        stop: the stop string that ended it, if any.
    """

    text: str
    num_tokens: int
    finished: bool
    stop: str | None = None


class Generator(Protocol):
    def generate(
        self,
        conversations: Sequence[list[dict]],
        *,
        assistant_prefixes: Sequence[str] | None = None,
        num_samples: int = 1,
        max_new_tokens: int = 256,
        stop: Sequence[str] | None = None,
    ) -> list[list[Completion]]:
        """`num_samples` continuations of each conversation's assistant turn, which starts with the prefix."""
        ...

    def count_tokens(self, text: str) -> int:
        """How many tokens `text` takes inside an assistant turn (for cost accounting)."""
        ...


def cut_at_stop(text: str, stop: Sequence[str] | None) -> tuple[str, str | None]:
    """Cut `text` right after the earliest stop string it contains; return the text and that stop string."""
    best = None
    for string in stop or ():
        index = text.find(string)
        if index != -1 and (best is None or index < best[0]):
            best = (index, string)
    if best is None:
        return text, None
    return text[: best[0] + len(best[1])], best[1]


class _ChatTemplateMixin:
    """Prompt rendering and token counting shared by the generators (both hold a `tokenizer`)."""

    def render(self, conversation: list[dict], prefix: str = "") -> str:
        return self.tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True) + prefix

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])


class TransformersGenerator(_ChatTemplateMixin):
    """Batched generation with `model.generate` (left padding, sampling or greedy).

    Args:
        model, tokenizer: a causal LM and its tokenizer (the tokenizer's chat template renders the conversations).
        batch_size: conversations per `generate` call (each expanded to `num_samples` sequences).
        temperature: 0 means greedy decoding; otherwise sampling at this temperature with `top_p`.
    """

    def __init__(self, model, tokenizer, batch_size: int = 16, temperature: float = 1.0, top_p: float = 1.0):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.temperature = temperature
        self.top_p = top_p
        eos = model.generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos]) | {tokenizer.eos_token_id}
        self.eos_ids.discard(None)

    @classmethod
    def from_pretrained(cls, path: str, **kwargs) -> "TransformersGenerator":
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=torch.float32 if not torch.cuda.is_available() else "auto"
        )
        if torch.cuda.is_available():
            model = model.to("cuda")
        return cls(model.eval(), tokenizer, **kwargs)

    def generate(self, conversations, *, assistant_prefixes=None, num_samples=1, max_new_tokens=256, stop=None):
        import torch

        prefixes = assistant_prefixes or [""] * len(conversations)
        texts = [self.render(c, p) for c, p in zip(conversations, prefixes, strict=True)]
        results = []
        for begin in range(0, len(texts), self.batch_size):
            batch = texts[begin : begin + self.batch_size]
            # Left padding puts every prompt's last token at the same position, so new tokens line up.
            self.tokenizer.padding_side = "left"
            inputs = self.tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False)
            inputs = inputs.to(self.model.device)
            sampling = {"do_sample": False}
            if self.temperature > 0:
                sampling = {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p, "top_k": 0}
            with torch.no_grad():
                output = self.model.generate(
                    **inputs,
                    max_new_tokens=max_new_tokens,
                    num_return_sequences=num_samples,
                    stop_strings=list(stop) if stop else None,
                    tokenizer=self.tokenizer if stop else None,
                    pad_token_id=self.tokenizer.pad_token_id,
                    **sampling,
                )
            new_tokens = output[:, inputs["input_ids"].shape[1] :].tolist()
            for i in range(len(batch)):
                results.append(
                    [self._completion(ids, stop) for ids in new_tokens[i * num_samples : (i + 1) * num_samples]]
                )
        return results

    def _completion(self, ids: list[int], stop) -> Completion:
        # Everything after the first EOS is padding. The pad token may equal EOS, so a row that a stop string ended
        # also "ends with EOS": the stop string decides which it was.
        length = next((i + 1 for i, token in enumerate(ids) if token in self.eos_ids), len(ids))
        ended_with_eos = length <= len(ids) and bool(ids) and ids[length - 1] in self.eos_ids
        body = ids[: length - 1] if ended_with_eos else ids[:length]
        text, stop_hit = cut_at_stop(self.tokenizer.decode(body, skip_special_tokens=True), stop)
        if stop_hit is not None:
            ended_with_eos = False
            pad = self.tokenizer.pad_token_id
            while body and body[-1] == pad:
                body = body[:-1]
        num_tokens = len(body) + int(ended_with_eos)
        return Completion(
            text=text, num_tokens=num_tokens, finished=ended_with_eos or stop_hit is not None, stop=stop_hit
        )


class VLLMGenerator(_ChatTemplateMixin):
    """Generation with vLLM (GPU). Same interface as `TransformersGenerator`.

    Not exercised by the test suite, which runs on CPU machines without vLLM.
    """

    def __init__(self, path: str, temperature: float = 1.0, top_p: float = 1.0, seed: int = 0, **llm_kwargs):
        from vllm import LLM

        self.llm = LLM(model=path, seed=seed, **llm_kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self.temperature = temperature
        self.top_p = top_p

    def generate(self, conversations, *, assistant_prefixes=None, num_samples=1, max_new_tokens=256, stop=None):
        from vllm import SamplingParams

        prefixes = assistant_prefixes or [""] * len(conversations)
        params = SamplingParams(
            n=num_samples,
            max_tokens=max_new_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            stop=list(stop) if stop else None,
            include_stop_str_in_output=True,
        )
        prompts = [self.render(c, p) for c, p in zip(conversations, prefixes, strict=True)]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        return [
            [
                Completion(
                    text=o.text,
                    num_tokens=len(o.token_ids),
                    finished=o.finish_reason == "stop",
                    stop=o.stop_reason if isinstance(o.stop_reason, str) else None,
                )
                for o in output.outputs
            ]
            for output in outputs
        ]


def vllm_available() -> bool:
    try:
        import torch
        import vllm  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


def load_generator(path: str, backend: str = "auto", **kwargs):
    """A generator for the model at `path`: vLLM when `backend="vllm"`, or `"auto"` with vLLM and a GPU present;
    transformers otherwise. `kwargs` go to the generator (temperature, top_p, batch_size for transformers)."""
    if backend not in ("auto", "vllm", "transformers"):
        raise ValueError(f"backend must be 'auto', 'vllm' or 'transformers', got {backend!r}.")
    if backend == "vllm" or (backend == "auto" and vllm_available()):
        kwargs.pop("batch_size", None)
        logger.info("Generating with vLLM.")
        return VLLMGenerator(path, **kwargs)
    kwargs.pop("seed", None)
    return TransformersGenerator.from_pretrained(path, **kwargs)
