"""Free verifiers: what the model's own next-token distributions say about a completion, read during generation.

These cost nothing beyond the generation that samples the completion: they come from the same forward passes, from
the untempered logits (like r_s, whatever the sampling temperature). They are the baselines a trained self-reward
has to beat, because any model has them. Per completion y = (y_1, …, y_L) (its EOS included when it finished), with
p_t the model's distribution at the step that sampled y_t and V the vocabulary size:

    mean_log_prob             (1/L) Σ_t log p_t(y_t)                      (how likely the model found what it wrote)
    token_confidence          (1/L) Σ_t C_t,  C_t = −(1/k) Σ_{j ≤ k} log p_t(j-th most likely token)   (DeepConf)
    lowest_group_confidence   min over windows of n consecutive positions of the window's mean C_t     (DeepConf)
    tail_confidence           mean C_t over the last n_tail positions                                (DeepConf)
    self_certainty            (1/L) Σ_t KL(U ‖ p_t) = (1/L) Σ_t (−log V − (1/V) Σ_v log p_t(v))    (Kang et al.)

DeepConf's settings (Fu et al. 2025): k = 20 candidates, windows of n = 2048 tokens and a tail of 2048 tokens. A
completion shorter than a window is one group (its whole trace), so on short answers the three DeepConf traces
coincide. Higher is more confident for every one of them.
"""

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from transformers import LogitsProcessor

from ..core.readout import causal_lm


CONFIDENCE_TOP_K = 20
"""k of DeepConf's token confidence: the number of most likely candidates averaged at each position."""
GROUP_WINDOW = 2048
"""n of DeepConf's group confidence: tokens per sliding window."""
TAIL_WINDOW = 2048
"""DeepConf's tail: the last tokens averaged by the tail confidence."""

TRACE_VERIFIERS = (
    "mean_log_prob",
    "token_confidence",
    "lowest_group_confidence",
    "tail_confidence",
    "self_certainty",
)
"""The free verifiers read from a completion's own distributions (higher: more confident)."""


@dataclass(frozen=True)
class ConfidenceSettings:
    """The windows and candidate count of the DeepConf verifiers (the paper's by default)."""

    top_k: int = CONFIDENCE_TOP_K
    group_window: int = GROUP_WINDOW
    tail_window: int = TAIL_WINDOW

    def __post_init__(self):
        for name in ("top_k", "group_window", "tail_window"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}.")


DEEPCONF_SETTINGS = ConfidenceSettings()
"""The paper's settings."""


def position_statistics(logits: torch.Tensor, top_k: int = CONFIDENCE_TOP_K) -> tuple[torch.Tensor, ...]:
    """Per row of untempered next-token `logits` (B, V): the log-probabilities (B, V), DeepConf's token confidence
    C = −mean of the top-k log-probabilities (B,), and the self-certainty KL(U ‖ p) (B,). Computed in float32."""
    log_probs = logits.float().log_softmax(dim=-1)
    vocab = log_probs.shape[-1]
    confidence = -log_probs.topk(min(top_k, vocab), dim=-1).values.mean(dim=-1)
    # KL(U ‖ p) = Σ_v (1/V) log((1/V) / p(v)); a token of probability 0 (a −inf logit) makes it +inf, as it should.
    certainty = -math.log(vocab) - log_probs.mean(dim=-1)
    return log_probs, confidence, certainty


def window_means(values: list[float], window: int) -> list[float]:
    """Means of every run of `window` consecutive values (one mean of all of them when there are fewer)."""
    if not values:
        return []
    window = min(window, len(values))
    total = sum(values[:window])
    means = [total / window]
    for end in range(window, len(values)):
        total += values[end] - values[end - window]
        means.append(total / window)
    return means


def trace_verifiers(
    token_log_probs: list[float],
    confidences: list[float],
    certainties: list[float],
    settings: ConfidenceSettings = DEEPCONF_SETTINGS,
) -> dict[str, float]:
    """The free verifiers of one completion from its per-position values (see the module docstring). Empty when
    the completion has no token."""
    length = len(token_log_probs)
    if not (length == len(confidences) == len(certainties)):
        raise ValueError(f"Per-position values of unequal lengths: {length}, {len(confidences)}, {len(certainties)}.")
    if length == 0:
        return {}
    tail = confidences[-min(settings.tail_window, length) :]
    return {
        "mean_log_prob": sum(token_log_probs) / length,
        "token_confidence": sum(confidences) / length,
        "lowest_group_confidence": min(window_means(confidences, settings.group_window)),
        "tail_confidence": sum(tail) / len(tail),
        "self_certainty": sum(certainties) / length,
    }


class TokenStatistics(LogitsProcessor):
    """Records, during `model.generate`, each step's statistics of the untempered distribution of every row.

    A forward hook on the causal LM keeps the raw logits of the last position (what the model computed, before any
    logits processor or temperature); the statistics of that distribution are stored per step. The log-probability
    of the token sampled from a step is known one step later: the logits processor call of the next step sees it as
    the last input id (`finish` reads the last one from the returned sequences). Sampling is unchanged: the processor
    returns the scores it is given. One row per input row (no beam search, one sequence per prompt row).
    """

    def __init__(self, prompt_width: int, top_k: int = CONFIDENCE_TOP_K):
        self.prompt_width = prompt_width
        self.top_k = top_k
        self.confidences: list[torch.Tensor] = []
        self.certainties: list[torch.Tensor] = []
        self.token_log_probs: list[torch.Tensor] = []
        self._previous: torch.Tensor | None = None  # log-probabilities of the last step, until its token is known
        self._pending: torch.Tensor | None = None  # raw logits of the last forward, until its processor call

    def capture(self, module, args, output) -> None:
        # Only the last forward before a processor call counts: that is the one whose distribution is sampled from.
        logits = output.logits if hasattr(output, "logits") else output[0]
        self._pending = logits[:, -1].detach()

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[1] > self.prompt_width:  # the token sampled from the previous step is now an input
            self._gather(input_ids[:, -1])
        if self._pending is None:
            raise RuntimeError("Token statistics: a decode step ran no forward of the causal LM to read from.")
        log_probs, confidence, certainty = position_statistics(self._pending, self.top_k)
        self.confidences.append(confidence)
        self.certainties.append(certainty)
        self._previous, self._pending = log_probs, None
        return scores

    def _gather(self, token_ids: torch.Tensor) -> None:
        if self._previous is None:
            raise RuntimeError("Token statistics: a generated token arrived without the distribution it came from.")
        self.token_log_probs.append(self._previous.gather(1, token_ids.view(-1, 1).to(self._previous.device))[:, 0])
        self._previous = None

    def finish(self, sequences: torch.Tensor) -> None:
        """Read the log-probability of the last generated token (sampled after the last processor call)."""
        if self._previous is not None and sequences.shape[1] > self.prompt_width:
            self._gather(sequences[:, -1])

    def rows(self, lengths: list[int], settings: ConfidenceSettings = DEEPCONF_SETTINGS) -> list[dict[str, float]]:
        """The free verifiers of each row, over its first `lengths[row]` generated tokens."""
        steps = len(self.token_log_probs)
        if not steps:
            return [{} for _ in lengths]
        # (rows, steps) lists, one transfer each
        values = [
            torch.stack(s[:steps], dim=1).tolist() for s in (self.token_log_probs, self.confidences, self.certainties)
        ]
        return [
            trace_verifiers(*(v[row][: min(length, steps)] for v in values), settings)
            for row, length in enumerate(lengths)
        ]

    @contextmanager
    def recording(self, model) -> Iterator["TokenStatistics"]:
        """Within the block, every forward of `model`'s causal LM records its last position's statistics."""
        handle = causal_lm(model).register_forward_hook(self.capture)
        try:
            yield self
        finally:
            handle.remove()


def vllm_trace_verifiers(
    token_ids: list[int], position_logprobs, settings: ConfidenceSettings = DEEPCONF_SETTINGS
) -> dict[str, float]:
    """The free verifiers of a vLLM sample requested with `logprobs=settings.top_k` (raw log-probabilities: the
    scorer builds its `vllm.LLM` with `logprobs_mode="raw_logprobs"`).

    vLLM returns, per generated position, the log-probabilities of the top-k candidates and of the sampled token, not
    the whole distribution: self-certainty needs all of it and is left out here. Positions without log-probs (an EOS
    the scorer appended because vLLM did not return it) are not counted.
    """
    log_probs, confidences = [], []
    for token, candidates in zip(token_ids, position_logprobs or [], strict=False):
        if not candidates or token not in candidates:
            continue
        values = sorted((float(getattr(c, "logprob", c)) for c in candidates.values()), reverse=True)
        log_probs.append(float(getattr(candidates[token], "logprob", candidates[token])))
        confidences.append(-sum(values[: settings.top_k]) / min(settings.top_k, len(values)))
    if not log_probs:
        return {}
    verifiers = trace_verifiers(log_probs, confidences, [0.0] * len(log_probs), settings)
    del verifiers["self_certainty"]
    return verifiers
