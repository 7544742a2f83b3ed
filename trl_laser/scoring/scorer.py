"""Self-reward at inference: sample completions and read each one's LaSeR score for the cost of one token.

    r_s(x, y) = β · (log π(z_c | x, y) − c_ref)

log π(z_c | x, y) is the next-token distribution right after the completion's EOS, i.e. the model's output at the
step whose *input* is that EOS. During generation transformers computes that step anyway for every row that
finishes before the last step (finished rows keep being fed, with padding), so `generate` reads the score there: a
forward hook keeps the backbone's last hidden state of each decode step, and a logits processor projects it onto z_c
(one row of the LM head) for the rows whose first EOS was just fed. Rows whose EOS is the very last generated token
were never fed it; for them one extra decode step on the returned cache finishes the job. No second prefill.

`score` rescoring existing completions is a batched forward over prompt + completion + EOS (this is what the LaSeR
authors' evaluation does for every completion); both paths give the same numbers for the same tokens.

With vLLM (optional, GPU), completions are sampled with vLLM and each finished one is scored by a one-token request
on prompt + completion: with prefix caching the prefix's KV blocks are reused, so only the last partial block is
recomputed (at most `block_size` tokens, 16 by default) plus one decode step, instead of a full prefill.
"""

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from .readout import backbone, causal_lm, token_log_probs
from .recipe import SELF_REWARD_CONFIG_NAME, load_self_reward_config


logger = logging.getLogger(__name__)

Prompt = str | list[dict]


@dataclass
class GeneratedSamples:
    """The samples of one prompt.

    Attributes:
        prompt: the prompt as given.
        texts: decoded completions (special tokens and the final EOS left out).
        token_ids: generated ids, up to and including the first EOS (all of them for truncated completions).
        scores: r_s per completion; None for completions that hit the length limit (no last token, no score).
        finished: whether each completion ended with EOS.
    """

    prompt: Prompt
    texts: list[str]
    token_ids: list[list[int]]
    scores: list[float | None]
    finished: list[bool]


def resolve_scoring_recipe(
    path: str | None, token: str | int | None = None, beta: float | None = None, ref_constant: float | None = None
) -> tuple[str | int, float, float]:
    """(token, β, c_ref) from explicit values, falling back on the LaSeR metadata saved in `path`.

    Raises a ValueError naming what to pass when a value is neither given nor stored.
    """
    metadata = None
    explicit = token is not None and beta is not None and ref_constant is not None
    if not explicit and path is not None and os.path.isfile(os.path.join(path, SELF_REWARD_CONFIG_NAME)):
        metadata = load_self_reward_config(path)
        if metadata.use_ref_model:
            logger.warning(
                f"{path} was trained against the reference model's real log-probs; scoring uses the stored constant "
                f"c_ref = {metadata.ref_constant}."
            )
    if metadata is not None:
        token = metadata.token_id if token is None else token
        beta = metadata.beta if beta is None else beta
        ref_constant = metadata.ref_constant if ref_constant is None else ref_constant
    missing = [
        name for name, value in (("token", token), ("beta", beta), ("ref_constant", ref_constant)) if value is None
    ]
    if missing:
        where = f"{path!r} has no {SELF_REWARD_CONFIG_NAME}" if path else "the model has no LaSeR metadata"
        raise ValueError(
            f"Cannot score: {where} and {', '.join(missing)} {'was' if len(missing) == 1 else 'were'} not given. Use a "
            "checkpoint saved by LaSeRGRPOTrainer, or pass token=, beta= and ref_constant= (command line: --token, "
            "--beta, --ref-constant); measure the constant with `trl-laser estimate-constant`."
        )
    return token, float(beta), float(ref_constant)


def _is_vllm(model) -> bool:
    return type(model).__module__.split(".")[0] == "vllm"


def left_pad(sequences: Sequence[Sequence[int]], pad_id: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ids and attention mask, so that every row's last token sits in the last column."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        if sequence:
            ids[row, width - len(sequence) :] = torch.as_tensor(sequence, dtype=torch.long)
            mask[row, width - len(sequence) :] = 1
    return ids.to(device), mask.to(device)


def position_ids_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only (pads get 0), as transformers' `generate` numbers left-padded rows."""
    return (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)


class _AfterEosRecorder(LogitsProcessor):
    """Reads log π(z_c) at the decode step whose input is a row's first EOS, during `model.generate`.

    `capture` (a forward hook on the backbone) keeps the last position's hidden state of each forward; the logits
    processor call that follows sees the ids fed to that forward and projects the rows that just fed their first
    generated EOS. The scores passed to the processor are returned untouched, so sampling is unchanged.
    """

    def __init__(self, model, token_id: int, eos_ids: torch.Tensor, prompt_width: int, batch_size: int, device):
        self.model = model
        self.token_id = token_id
        self.eos_ids = eos_ids
        self.prompt_width = prompt_width
        self.hidden: torch.Tensor | None = None
        self.log_probs = torch.full((batch_size,), float("nan"), device=device)
        self.done = torch.zeros(batch_size, dtype=torch.bool, device=device)

    def capture(self, module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output.last_hidden_state
        self.hidden = hidden[:, -1]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[1] > self.prompt_width:  # the prefill's input is the prompt: nothing generated yet
            # With pad == EOS, finished rows keep feeding EOS; `done` keeps only the first.
            self.record(torch.isin(input_ids[:, -1], self.eos_ids) & ~self.done)
        return scores

    def record(self, rows: torch.Tensor) -> None:
        if rows.any():
            self.log_probs[rows] = token_log_probs(self.model, self.hidden[rows], self.token_id)
            self.done |= rows


class SelfRewardScorer:
    """Sample completions with their LaSeR self-reward r_s, or score existing ones.

    Args:
        model: a causal LM (transformers, optionally PEFT-wrapped), or a `vllm.LLM`.
        tokenizer: its tokenizer; string prompts become one user turn of its chat template (plain text without one).
        token: the self-reward token z_c (string or id). β (`beta`) and c_ref (`ref_constant`) complete the recipe.
            Any of the three left as None is read from the LaSeR metadata next to the model's weights
            (`self_reward_config.json` in `model.name_or_path`); an error says what to pass when there is none.
    """

    def __init__(
        self,
        model,
        tokenizer,
        token: str | int | None = None,
        beta: float | None = None,
        ref_constant: float | None = None,
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.is_vllm = _is_vllm(model)
        path = getattr(model, "name_or_path", None) if not self.is_vllm else None
        token, self.beta, self.ref_constant = resolve_scoring_recipe(
            path if isinstance(path, str) and os.path.isdir(path) else None, token, beta, ref_constant
        )
        self.eos_ids = self._eos_ids()
        self.token, self.token_id = self._resolve_token(token)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_ids[0]

    @classmethod
    def from_pretrained(
        cls,
        path: str,
        token: str | int | None = None,
        beta: float | None = None,
        ref_constant: float | None = None,
        backend: str = "transformers",
        **model_kwargs,
    ) -> "SelfRewardScorer":
        """Load a model and its scoring recipe (token, β, c_ref from `self_reward_config.json`, or the arguments).

        `backend="vllm"` loads a `vllm.LLM` (prefix caching on) instead; `model_kwargs` go to the loader.
        """
        token, beta, ref_constant = resolve_scoring_recipe(path, token, beta, ref_constant)  # fail before loading
        if backend == "vllm":
            try:
                from vllm import LLM
            except ImportError:
                raise ImportError("backend='vllm' needs vLLM: `pip install trl-laser[vllm]` (GPU only).") from None
            llm = LLM(model=path, enable_prefix_caching=True, **model_kwargs)
            return cls(llm, llm.get_tokenizer(), token=token, beta=beta, ref_constant=ref_constant)
        if backend != "transformers":
            raise ValueError(f"backend must be 'transformers' or 'vllm', not {backend!r}.")
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(path)
        model_kwargs.setdefault("dtype", "auto" if torch.cuda.is_available() else torch.float32)
        model = AutoModelForCausalLM.from_pretrained(path, **model_kwargs)
        if torch.cuda.is_available() and "device_map" not in model_kwargs:
            model = model.to("cuda")
        return cls(model.eval(), tokenizer, token=token, beta=beta, ref_constant=ref_constant)

    # ----------------------------------------------------------------------------------------------------------------
    # Setup helpers

    def _eos_ids(self) -> list[int]:
        config = self.model.generation_config if not self.is_vllm else None
        ids = getattr(config, "eos_token_id", None)
        ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
        # The tokenizer's EOS first: it is the token appended when scoring text that has none.
        ids = [self.tokenizer.eos_token_id, *ids]
        ids = list(dict.fromkeys(i for i in ids if i is not None))
        if not ids:
            raise ValueError("Neither the tokenizer nor the generation config defines an EOS token.")
        return ids

    def _resolve_token(self, token: str | int) -> tuple[str, int]:
        if not self.is_vllm:
            from .token import resolve_self_reward_token

            return resolve_self_reward_token(self.tokenizer, causal_lm(self.model), token, eos_token_ids=self.eos_ids)
        if isinstance(token, str) and not token.lstrip("-").isdigit():
            if token not in self.tokenizer.get_vocab():
                raise ValueError(f"The self-reward token {token!r} is not a token of this tokenizer.")
            return token, self.tokenizer.convert_tokens_to_ids(token)
        return self.tokenizer.convert_ids_to_tokens(int(token)), int(token)

    def encode_prompt(self, prompt: Prompt) -> list[int]:
        """Token ids of a prompt: chat messages (or a string, as one user turn) through the chat template with the
        assistant turn opened; a plain string as is when the tokenizer has no chat template."""
        if isinstance(prompt, str) and getattr(self.tokenizer, "chat_template", None) is None:
            return self.tokenizer(prompt)["input_ids"]
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def to_score(self, log_prob: float) -> float:
        """r_s = β · (log π(z_c | x, y) − c_ref)."""
        return self.beta * (log_prob - self.ref_constant)

    def _split(self, ids: list[int]) -> tuple[list[int], bool]:
        """Cut generated ids after the first EOS; whether there was one."""
        for position, token in enumerate(ids):
            if token in self.eos_ids:
                return ids[: position + 1], True
        return ids, False

    def _decode(self, ids: list[int], finished: bool) -> str:
        return self.tokenizer.decode(ids[:-1] if finished else ids, skip_special_tokens=True)

    # ----------------------------------------------------------------------------------------------------------------
    # Scoring existing completions

    def score(
        self, prompts: Sequence[Prompt], completions: Sequence[str | Sequence[int]], batch_size: int = 16
    ) -> list[float]:
        """r_s of each completion of the matching prompt, as if the completion ended there.

        A completion is text (tokenized without special tokens, EOS appended) or generated token ids (EOS appended
        unless they already end with one). One batched forward over prompt + completion per batch; only the last
        position's hidden state goes through the LM head.
        """
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions.")
        sequences = []
        for prompt, completion in zip(prompts, completions, strict=True):
            if isinstance(completion, str):
                ids = self.tokenizer(completion, add_special_tokens=False)["input_ids"]
            else:
                ids = [int(i) for i in completion]
            if not ids or ids[-1] not in self.eos_ids:
                ids = [*ids, self.eos_ids[0]]
            sequences.append(self.encode_prompt(prompt) + ids)
        return [self.to_score(lp) for lp in self.sequence_log_probs(sequences, batch_size)]

    def sequence_log_probs(self, sequences: Sequence[Sequence[int]], batch_size: int = 16) -> list[float]:
        """log π(z_c | sequence) at temperature 1, for full sequences (prompt + completion ending with EOS)."""
        if self.is_vllm:
            return self._vllm_log_probs(sequences)
        # Similar lengths in a batch waste less compute on padding.
        order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
        result = [math.nan] * len(sequences)
        device = causal_lm(self.model).device
        for begin in range(0, len(order), batch_size):
            chunk = order[begin : begin + batch_size]
            ids, mask = left_pad([sequences[i] for i in chunk], self.pad_id, device)
            with torch.no_grad():
                hidden = backbone(self.model)(
                    input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask), use_cache=False
                ).last_hidden_state[:, -1]
                log_probs = token_log_probs(self.model, hidden, self.token_id).tolist()
            for i, value in zip(chunk, log_probs, strict=True):
                result[i] = value
        return result

    # ----------------------------------------------------------------------------------------------------------------
    # Generation with scores

    def generate(
        self,
        prompts: Sequence[Prompt],
        num_samples: int = 1,
        max_new_tokens: int = 512,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        batch_size: int = 16,
        seed: int | None = None,
        progress: bool = False,
        **generate_kwargs,
    ) -> list[GeneratedSamples]:
        """Sample `num_samples` completions per prompt and score each finished one with r_s, in the same pass.

        `temperature=0` decodes greedily. The score always uses the untempered distribution, whatever the sampling
        settings. `batch_size` counts sequences per `model.generate` call (a prompt's samples may span two calls).
        Extra keyword arguments (e.g. `min_new_tokens`, `logits_processor`) go to `model.generate`.
        """
        unsupported = {"num_return_sequences", "num_beams"} & generate_kwargs.keys()
        if unsupported:
            raise ValueError(f"{sorted(unsupported)} not supported: use num_samples (sampling or greedy only).")
        prompts = list(prompts)
        prompt_ids = [self.encode_prompt(p) for p in prompts]
        if self.is_vllm:
            rows = self._vllm_generate(prompt_ids, num_samples, max_new_tokens, temperature, top_p, top_k, seed)
        else:
            if seed is not None:
                torch.manual_seed(seed)
            flat = [i for i in range(len(prompts)) for _ in range(num_samples)]
            starts = range(0, len(flat), batch_size)
            if progress:
                from tqdm.auto import tqdm

                starts = tqdm(starts, desc="Generating", unit="batch")
            sampling = (
                {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": top_k}
                if temperature > 0
                else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
            )
            rows = []
            for begin in starts:
                batch = [prompt_ids[i] for i in flat[begin : begin + batch_size]]
                rows.extend(self._generate_batch(batch, max_new_tokens, **sampling, **generate_kwargs))
        samples = []
        for i, prompt in enumerate(prompts):
            own = rows[i * num_samples : (i + 1) * num_samples]
            samples.append(
                GeneratedSamples(
                    prompt=prompt,
                    texts=[self._decode(ids, done) for ids, done, _ in own],
                    token_ids=[ids for ids, _, _ in own],
                    scores=[self.to_score(lp) if done else None for _, done, lp in own],
                    finished=[done for _, done, _ in own],
                )
            )
        return samples

    def _generate_batch(self, prompt_ids: list[list[int]], max_new_tokens: int, **generate_kwargs):
        """Generate for one batch; returns (completion ids, finished, log π(z_c)) per row."""
        lm = causal_lm(self.model)
        input_ids, prompt_mask = left_pad(prompt_ids, self.pad_id, lm.device)
        eos = torch.as_tensor(self.eos_ids, device=lm.device)
        recorder = _AfterEosRecorder(self.model, self.token_id, eos, input_ids.shape[1], len(prompt_ids), lm.device)
        processors = LogitsProcessorList([*generate_kwargs.pop("logits_processor", []), recorder])
        handle = backbone(self.model).register_forward_hook(recorder.capture)
        try:
            with torch.no_grad():
                output = lm.generate(
                    input_ids=input_ids,
                    attention_mask=prompt_mask,
                    max_new_tokens=max_new_tokens,
                    eos_token_id=self.eos_ids,
                    pad_token_id=self.pad_id,
                    logits_processor=processors,
                    return_dict_in_generate=True,
                    use_cache=True,
                    **generate_kwargs,
                )
                completions = output.sequences[:, input_ids.shape[1] :]
                finished = torch.isin(completions, eos).any(dim=1)
                last_step = finished & ~recorder.done
                if last_step.any():
                    self._score_last_step(recorder, last_step, output, completions, prompt_mask, prompt_ids)
        finally:
            handle.remove()
        rows = []
        for row, ids in enumerate(completions.tolist()):
            ids, done = self._split(ids)
            rows.append((ids, done, recorder.log_probs[row].item()))
        return rows

    def _score_last_step(self, recorder, rows, output, completions, prompt_mask, prompt_ids) -> None:
        """Rows whose first EOS is the last generated token: generation stopped before feeding it, so feed it now,
        one decode step on the returned cache (the backbone hook records the hidden state)."""
        cache = getattr(output, "past_key_values", None)
        if cache is None:  # a model without a cache: fall back on a forward over these rows
            indices = rows.nonzero().flatten().tolist()
            full = [prompt_ids[i] + completions[i].tolist() for i in indices]
            recorder.log_probs[rows] = torch.tensor(self.sequence_log_probs(full), device=recorder.log_probs.device)
            recorder.done |= rows
            return
        mask = torch.cat([prompt_mask, torch.ones_like(completions)], dim=1)
        backbone(self.model)(
            input_ids=completions[:, -1:],
            attention_mask=mask,
            position_ids=position_ids_from_mask(mask)[:, -1:],
            past_key_values=cache,
            use_cache=True,
        )
        recorder.record(rows)

    # ----------------------------------------------------------------------------------------------------------------
    # vLLM (optional; GPU only, not exercised by the CPU test suite)

    def _vllm_generate(self, prompt_ids, num_samples, max_new_tokens, temperature, top_p, top_k, seed):
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = SamplingParams(
            n=num_samples,
            max_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k if top_k > 0 else -1,
            seed=seed,
            stop_token_ids=self.eos_ids,
        )
        outputs = self.model.generate(
            [TokensPrompt(prompt_token_ids=ids) for ids in prompt_ids], params, use_tqdm=False
        )
        rows, to_score = [], []
        for ids, output in zip(prompt_ids, outputs, strict=True):
            for completion in output.outputs:
                tokens, done = self._split(list(completion.token_ids))
                if not done and completion.finish_reason == "stop" and completion.stop_reason is None:
                    tokens, done = [*tokens, self.eos_ids[0]], True  # EOS ended it but was not returned
                rows.append([tokens, done, math.nan])
                if done:
                    to_score.append((len(rows) - 1, ids + tokens))
        log_probs = self._vllm_log_probs([sequence for _, sequence in to_score])
        for (row, _), value in zip(to_score, log_probs, strict=True):
            rows[row][2] = value
        return [tuple(row) for row in rows]

    def _vllm_log_probs(self, sequences) -> list[float]:
        """log π(z_c | sequence) by a one-token request per sequence, forced to z_c.

        vLLM returns the sampled token's log-prob computed from the raw logits (the default `logprobs_mode`), before
        the allowed-token mask, so it is the untempered log π(z_c). With prefix caching the sequence's full KV blocks
        are reused from generation; the cost is the last partial block plus one step.
        """
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = SamplingParams(max_tokens=1, temperature=1.0, allowed_token_ids=[self.token_id], logprobs=0)
        outputs = self.model.generate(
            [TokensPrompt(prompt_token_ids=list(s)) for s in sequences], params, use_tqdm=False
        )
        return [output.outputs[0].logprobs[0][self.token_id].logprob for output in outputs]
