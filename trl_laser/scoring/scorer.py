"""Generation with self-reward: sample completions, each carrying its LaSeR score for the cost of one token.

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

The scorer is also the generator of the self-correction pipeline (assistant-turn prefixes, stop strings): one loaded
model, one EOS set, one way to cut a completion.
"""

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from accelerate import PartialState
from accelerate.logging import get_logger

from ..training.self_reward import self_reward_score
from .during_generation import generate_with_log_probs, position_ids_from_mask
from .readout import backbone, causal_lm, token_log_probs
from .recipe import SELF_REWARD_CONFIG_NAME, SelfRewardConfig, load_self_reward_config


logger = get_logger(__name__)

Prompt = str | list[dict]


@dataclass
class Completion:
    """One sampled completion.

    Attributes:
        text: the decoded text (special tokens left out); when a stop string ended it, it ends with that string.
        token_ids: generated ids: up to and including the EOS when `finished`, up to the stop string when `stop`,
            all of them when the completion hit the length limit.
        finished: whether the completion ended with EOS.
        score: r_s; None when the completion did not finish (no last token, no score) or the scorer has no recipe.
        stop: the stop string that ended the completion, if any.
    """

    text: str
    token_ids: list[int]
    finished: bool
    score: float | None = None
    stop: str | None = None

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)


@dataclass
class GeneratedSamples:
    """The completions of one prompt, with per-field views (`texts`, `scores`, ...) for evaluation."""

    prompt: Prompt
    completions: list[Completion]

    @property
    def texts(self) -> list[str]:
        return [c.text for c in self.completions]

    @property
    def token_ids(self) -> list[list[int]]:
        return [c.token_ids for c in self.completions]

    @property
    def scores(self) -> list[float | None]:
        return [c.score for c in self.completions]

    @property
    def finished(self) -> list[bool]:
        return [c.finished for c in self.completions]


def eos_token_ids(tokenizer, generation_config=None) -> list[int]:
    """The ids that end a completion: the tokenizer's EOS first (it is appended when scoring text that has none),
    then those of the generation config (TRL's rule)."""
    ids = getattr(generation_config, "eos_token_id", None)
    ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
    ids = list(dict.fromkeys(i for i in [tokenizer.eos_token_id, *ids] if i is not None))
    if not ids:
        raise ValueError("Neither the tokenizer nor the generation config defines an EOS token.")
    return ids


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


def looks_like_local_path(name: str) -> bool:
    """Whether `name` can only mean a local path: absolute, starting with `.` or `~`, a Windows path, or with more
    than one `/` (a Hub id is `name` or `owner/name`)."""
    return (
        os.path.isabs(name) or name.startswith((".", "~")) or "\\" in name or name.count("/") > 1 or name.endswith("/")
    )


def check_model_path(name: str) -> str:
    """Raise a FileNotFoundError naming the fix when `name` is meant as a local model directory that does not exist
    (so that a mistyped path is never sent to the Hub as a repository id); returns `name`."""
    if os.path.exists(os.path.expanduser(name)):
        if not os.path.isdir(os.path.expanduser(name)):
            raise NotADirectoryError(f"{name!r} is a file; pass the model directory that holds config.json.")
        return name
    if looks_like_local_path(name):
        raise FileNotFoundError(
            f"Model directory {name!r} does not exist. Check the path (a Hub model id looks like 'owner/name')."
        )
    return name


def load_pretrained(path: str, backend: str = "transformers", **model_kwargs):
    """The model and tokenizer at `path`: a transformers causal LM (float32 on CPU, the checkpoint's dtype on a GPU,
    in eval mode) or, with `backend="vllm"`, a `vllm.LLM` with prefix caching. `model_kwargs` go to the loader."""
    check_model_path(path)
    if backend == "vllm":
        try:
            from vllm import LLM
        except ImportError:
            raise ImportError("backend='vllm' needs vLLM: `pip install trl-laser[vllm]` (GPU only).") from None
        if _vllm_accepts_logprobs_mode():
            # scores are read from the log-probs vLLM returns: ask for the raw ones explicitly (see `vllm_scoring_params`)
            model_kwargs.setdefault("logprobs_mode", RAW_LOGPROBS)
        llm = LLM(model=path, enable_prefix_caching=True, **model_kwargs)
        return llm, llm.get_tokenizer()
    if backend != "transformers":
        raise ValueError(f"backend must be 'transformers' or 'vllm', not {backend!r}.")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model_kwargs.setdefault("dtype", "auto" if torch.cuda.is_available() else torch.float32)
    model = AutoModelForCausalLM.from_pretrained(path, **model_kwargs)
    if torch.cuda.is_available() and "device_map" not in model_kwargs:
        model = model.to("cuda")
    return model.eval(), tokenizer


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


class SelfRewardScorer:
    """Sample completions with their LaSeR self-reward r_s, or score existing ones.

    Args:
        model: a causal LM (transformers, optionally PEFT-wrapped), or a `vllm.LLM`.
        tokenizer: its tokenizer; string prompts become one user turn of its chat template (plain text without one).
        config: the scoring recipe (token z_c, β, c_ref). None reads the LaSeR metadata saved next to the model's
            weights (`self_reward_config.json` in `model.name_or_path`); without either, the scorer generates
            without scores and `score` raises.
    """

    def __init__(self, model, tokenizer, config: SelfRewardConfig | None = None):
        PartialState()  # accelerate's logger needs its state, also outside `accelerate launch`
        self.model = model
        self.tokenizer = tokenizer
        self.is_vllm = _is_vllm(model)
        self.eos_ids = eos_token_ids(tokenizer, None if self.is_vllm else model.generation_config)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_ids[0]
        path = None if self.is_vllm else getattr(model, "name_or_path", None)
        if config is None and isinstance(path, str) and os.path.isfile(os.path.join(path, SELF_REWARD_CONFIG_NAME)):
            config = load_self_reward_config(path)
        self.config = None if config is None else self._resolve_token(config)
        if self.is_vllm and self.config is not None:
            check_vllm_logprobs_mode(model)
        if self.config is None:
            logger.info("No scoring recipe (self_reward_config.json) for this model: completions come without scores.")

    @classmethod
    def from_pretrained(
        cls, path: str, config: SelfRewardConfig | None = None, backend: str = "transformers", **model_kwargs
    ) -> "SelfRewardScorer":
        """Load the model at `path` (see `load_pretrained`) with its scoring recipe: `config`, else the LaSeR
        metadata saved with the model. The metadata is read, and checked, before the model is loaded."""
        check_model_path(path)
        if config is None and os.path.isfile(os.path.join(path, SELF_REWARD_CONFIG_NAME)):
            config = load_self_reward_config(path)
        model, tokenizer = load_pretrained(path, backend, **model_kwargs)
        return cls(model, tokenizer, config)

    # ----------------------------------------------------------------------------------------------------------------
    # Setup helpers

    def _resolve_token(self, config: SelfRewardConfig) -> SelfRewardConfig:
        """The recipe with its token validated against this tokenizer and model, and its id filled in."""
        token = config.token_id if config.token_id is not None else config.token
        if not self.is_vllm:
            from .token import resolve_self_reward_token

            string, token_id = resolve_self_reward_token(
                self.tokenizer, causal_lm(self.model), token, eos_token_ids=self.eos_ids
            )
        elif isinstance(token, str) and not token.lstrip("-").isdigit():
            if token not in self.tokenizer.get_vocab():
                raise ValueError(f"The self-reward token {token!r} is not a token of this tokenizer.")
            string, token_id = token, self.tokenizer.convert_tokens_to_ids(token)
        else:
            string, token_id = self.tokenizer.convert_ids_to_tokens(int(token)), int(token)
        return replace(config, token=string, token_id=token_id)

    def _require_config(self) -> SelfRewardConfig:
        if self.config is None:
            raise ValueError(
                "This scorer has no scoring recipe: the model has no self_reward_config.json. Pass "
                "`config=SelfRewardConfig(token=..., beta=..., ref_constant=...)` (see `trl-laser estimate-constant`)."
            )
        return self.config

    def encode_prompt(self, prompt: Prompt, assistant_prefix: str = "") -> list[int]:
        """Token ids of a prompt: chat messages (or a string, as one user turn) through the chat template with the
        assistant turn opened, followed by `assistant_prefix` (text the assistant has already written); a plain
        string as is when the tokenizer has no chat template."""
        if isinstance(prompt, str) and getattr(self.tokenizer, "chat_template", None) is None:
            text = prompt
        else:
            messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        # The prefix is tokenized together with the rendered prompt, as the whole text is in training.
        return self.tokenizer(text + assistant_prefix, add_special_tokens=False)["input_ids"]

    def count_tokens(self, text: str) -> int:
        """How many tokens `text` takes (for cost accounting)."""
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def cut_at_eos(self, ids: list[int]) -> tuple[list[int], bool]:
        """Generated ids up to and including the first EOS, and whether there was one."""
        for position, token in enumerate(ids):
            if token in self.eos_ids:
                return ids[: position + 1], True
        return ids, False

    def _completion(self, ids: list[int], stop: Sequence[str] | None) -> Completion:
        ids, finished = self.cut_at_eos(ids)
        text = self.tokenizer.decode(ids[:-1] if finished else ids, skip_special_tokens=True)
        text, hit = cut_at_stop(text, stop)
        if hit is not None:
            # A stop string ended the row; what follows it is padding (which is EOS when pad == EOS).
            finished = False
            while ids and (ids[-1] == self.pad_id or ids[-1] in self.eos_ids):
                ids = ids[:-1]
        return Completion(text=text, token_ids=ids, finished=finished, stop=hit)

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
        config = self._require_config()
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
        log_probs = self.self_reward_log_probs(sequences, batch_size)
        return [self_reward_score(lp, config.beta, config.ref_constant) for lp in log_probs]

    def self_reward_log_probs(self, sequences: Sequence[Sequence[int]], batch_size: int = 16) -> list[float]:
        """log π(z_c | sequence) at temperature 1, for full sequences (prompt + completion ending with EOS)."""
        token_id = self._require_config().token_id
        if self.is_vllm:
            return self._vllm_log_probs(sequences, token_id)
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
                log_probs = token_log_probs(self.model, hidden, token_id).tolist()
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
        *,
        assistant_prefixes: Sequence[str] | None = None,
        stop: Sequence[str] | None = None,
        **generate_kwargs,
    ) -> list[GeneratedSamples]:
        """Sample `num_samples` completions per prompt and score each finished one with r_s, in the same pass.

        `temperature=0` decodes greedily. The score always uses the untempered distribution, whatever the sampling
        settings. `assistant_prefixes` (one per prompt) is text the assistant turn already starts with; generation
        continues it. A completion that writes one of the `stop` strings ends there (it is not `finished` and has no
        score). `batch_size` counts sequences per `model.generate` call (a prompt's samples may span two calls).
        Extra keyword arguments (e.g. `min_new_tokens`, `logits_processor`) go to `model.generate`.
        """
        unsupported = {"num_return_sequences", "num_beams", "stop_strings"} & generate_kwargs.keys()
        if unsupported:
            raise ValueError(f"{sorted(unsupported)} not supported: use num_samples and stop.")
        prompts = list(prompts)
        prefixes = list(assistant_prefixes) if assistant_prefixes is not None else [""] * len(prompts)
        prompt_ids = [self.encode_prompt(p, prefix) for p, prefix in zip(prompts, prefixes, strict=True)]
        if self.is_vllm:
            rows = self._vllm_generate(prompt_ids, num_samples, max_new_tokens, temperature, top_p, top_k, seed, stop)
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
            if stop:
                sampling.update(stop_strings=list(stop), tokenizer=self.tokenizer)
            rows = []
            for begin in starts:
                batch = [prompt_ids[i] for i in flat[begin : begin + batch_size]]
                rows.extend(self._generate_batch(batch, max_new_tokens, stop, **sampling, **generate_kwargs))
        return [
            GeneratedSamples(prompt=prompt, completions=rows[i * num_samples : (i + 1) * num_samples])
            for i, prompt in enumerate(prompts)
        ]

    def _with_score(self, completion: Completion, log_prob: float) -> Completion:
        if completion.finished and self.config is not None:
            completion.score = self_reward_score(log_prob, self.config.beta, self.config.ref_constant)
        return completion

    def _generate_batch(self, prompt_ids: list[list[int]], max_new_tokens: int, stop, **generate_kwargs):
        """Generate for one batch; returns one `Completion` per row, scored when it finished."""
        lm = causal_lm(self.model)
        input_ids, prompt_mask = left_pad(prompt_ids, self.pad_id, lm.device)
        kwargs = dict(max_new_tokens=max_new_tokens, eos_token_id=self.eos_ids, pad_token_id=self.pad_id)
        if self.config is None:
            with torch.no_grad():
                sequences = lm.generate(input_ids=input_ids, attention_mask=prompt_mask, **kwargs, **generate_kwargs)
            log_probs = [math.nan] * len(prompt_ids)
        else:
            sequences, log_probs = generate_with_log_probs(
                self.model, self.config.token_id, self.eos_ids, input_ids, prompt_mask, **kwargs, **generate_kwargs
            )
            log_probs = log_probs.tolist()
        completions = sequences[:, input_ids.shape[1] :]
        return [
            self._with_score(self._completion(ids, stop), log_prob)
            for ids, log_prob in zip(completions.tolist(), log_probs, strict=True)
        ]

    # ----------------------------------------------------------------------------------------------------------------
    # vLLM (optional; GPU only: the request building and parsing are tested with stand-ins on CPU)

    def _vllm_generate(self, prompt_ids, num_samples, max_new_tokens, temperature, top_p, top_k, seed, stop):
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
            stop=list(stop) if stop else None,
            include_stop_str_in_output=True,
        )
        outputs = self.model.generate(
            [TokensPrompt(prompt_token_ids=ids) for ids in prompt_ids], params, use_tqdm=False
        )
        rows, to_score = [], []
        for ids, output in zip(prompt_ids, outputs, strict=True):
            for sample in output.outputs:
                tokens = list(sample.token_ids)
                if (
                    sample.finish_reason == "stop"
                    and sample.stop_reason is None
                    and not set(tokens) & set(self.eos_ids)
                ):
                    tokens.append(self.eos_ids[0])  # EOS ended it but was not returned
                completion = self._completion(tokens, stop)
                rows.append(completion)
                if completion.finished and self.config is not None:
                    to_score.append((completion, ids + completion.token_ids))
        if to_score:
            log_probs = self._vllm_log_probs([sequence for _, sequence in to_score], self.config.token_id)
            for (completion, _), log_prob in zip(to_score, log_probs, strict=True):
                self._with_score(completion, log_prob)
        return rows

    def _vllm_log_probs(self, sequences, token_id: int) -> list[float]:
        """log π(z_c | sequence) by a one-token request per sequence, forced to z_c.

        vLLM returns the sampled token's log-prob computed from the raw logits (the default `logprobs_mode`), before
        the allowed-token mask, so it is the untempered log π(z_c). With prefix caching the sequence's full KV blocks
        are reused from generation; the cost is the last partial block plus one step.
        """
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        outputs = self.model.generate(
            [TokensPrompt(prompt_token_ids=list(s)) for s in sequences],
            vllm_scoring_params(SamplingParams, token_id),
            use_tqdm=False,
        )
        return parse_vllm_scores(outputs, token_id)


# ---------------------------------------------------------------------------------------------------------------------
# vLLM scoring request: one forced token per sequence

RAW_LOGPROBS = "raw_logprobs"


def _vllm_accepts_logprobs_mode() -> bool:
    from vllm.engine.arg_utils import EngineArgs

    return "logprobs_mode" in getattr(EngineArgs, "__dataclass_fields__", {})


def vllm_logprobs_mode(llm) -> str:
    """The `logprobs_mode` a `vllm.LLM` was built with (vLLM versions without the option return raw log-probs)."""
    config = getattr(getattr(llm, "llm_engine", None), "model_config", None)
    mode = getattr(config, "logprobs_mode", RAW_LOGPROBS)
    return str(getattr(mode, "value", mode))


def check_vllm_logprobs_mode(llm) -> None:
    """The score needs the raw log-probs (`logprobs_mode="raw_logprobs"`, vLLM's default): the one-token request forces
    z_c with `allowed_token_ids`, and in the "processed" modes the returned value is computed after that mask (always
    0) or after temperature; "raw_logits" returns an unnormalised logit."""
    mode = vllm_logprobs_mode(llm)
    if mode != RAW_LOGPROBS:
        raise ValueError(
            f"This vllm.LLM returns logprobs_mode={mode!r}; the self-reward score needs log π(z_c) from the raw "
            f"logits. Build it with `vllm.LLM(..., logprobs_mode={RAW_LOGPROBS!r})` (the default), or load it with "
            "`SelfRewardScorer.from_pretrained(path, backend='vllm')`, which does."
        )


def vllm_scoring_params(sampling_params_class, token_id: int):
    """The one-token request that reads log π(z_c | sequence): sample exactly one token, forced to z_c by
    `allowed_token_ids`, at temperature 1, returning the sampled token's log-prob (`logprobs=0`). With raw log-probs
    the value is computed before the mask and the temperature, so it is the untempered log π(z_c)."""
    return sampling_params_class(max_tokens=1, temperature=1.0, allowed_token_ids=[token_id], logprobs=0)


def parse_vllm_scores(outputs, token_id: int) -> list[float]:
    """log π(z_c) from the outputs of `vllm_scoring_params` requests, one per sequence, with the checks that catch a
    request vLLM did not honour (another token sampled, no log-probs returned, a value that is no log-probability)."""
    values = []
    for index, output in enumerate(outputs):
        sample = output.outputs[0]
        if list(sample.token_ids) != [token_id] or not sample.logprobs:
            raise RuntimeError(
                f"The vLLM scoring request {index} returned tokens {list(sample.token_ids)} with "
                f"{'no' if not sample.logprobs else 'some'} log-probs; expected exactly z_c (id {token_id}) and its "
                "log-prob. This vLLM version may not support `allowed_token_ids` with `logprobs`."
            )
        value = sample.logprobs[0][token_id].logprob
        if not (math.isfinite(value) and value <= 0):
            raise RuntimeError(
                f"The vLLM scoring request {index} returned {value} for log π(z_c), which is no log-probability; "
                f"build the LLM with logprobs_mode={RAW_LOGPROBS!r}."
            )
        values.append(float(value))
    return values
