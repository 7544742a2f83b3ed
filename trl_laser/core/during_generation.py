"""Reading log π(z_c | x, y) while `model.generate` samples the completions: one token per completion, no prefill.

log π(z_c | x, y) is the next-token distribution computed from the hidden state of the completion's EOS, i.e. the
model's output at the decode step whose *input* is that EOS. Transformers computes that step anyway for every row
that finishes before the last step (finished rows keep being fed, with padding): a forward hook keeps the backbone's
last hidden state of each step, and a logits processor projects it onto z_c (one LM-head row) for the rows whose first
EOS was just fed. Rows whose EOS is the very last generated token were never fed it; for them one extra decode step
on the returned cache finishes the job. The scorer (inference) and the trainer (advantage mixing without an extra
forward) both read the score this way.
"""

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from .readout import backbone, capture_hidden_states, causal_lm, token_log_probs


def position_ids_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only (pads get 0), as transformers' `generate` numbers left-padded rows."""
    return (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)


class AfterEosRecorder(LogitsProcessor):
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
        self.recorded = torch.zeros(batch_size, dtype=torch.bool, device=device)

    def capture(self, module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output.last_hidden_state
        self.hidden = hidden[:, -1]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[1] > self.prompt_width:  # the prefill's input is the prompt: nothing generated yet
            # With pad == EOS, finished rows keep feeding EOS; `recorded` keeps only the first.
            self.record(torch.isin(input_ids[:, -1], self.eos_ids) & ~self.recorded)
        return scores

    def record(self, rows: torch.Tensor) -> None:
        if rows.any():
            self.log_probs[rows] = token_log_probs(self.model, self.hidden[rows], self.token_id).to(self.log_probs)
            self.recorded |= rows


@torch.no_grad()
def generate_with_log_probs(
    model, token_id: int, eos_ids, input_ids: torch.Tensor, attention_mask: torch.Tensor, generate=None, **kwargs
) -> tuple[torch.Tensor, torch.Tensor]:
    """`model.generate(input_ids=..., attention_mask=..., **kwargs)` (or `generate(...)`, e.g. the original of a
    wrapped method), returning the sequences and log π(z_c | x, y) of every row: read after the row's first EOS in
    `eos_ids`, NaN for rows that did not finish. `input_ids` must be left-padded (the prompt ends in the last column).
    """
    generate = generate if generate is not None else causal_lm(model).generate
    eos = torch.as_tensor(list(eos_ids), device=input_ids.device)
    prompt_width = input_ids.shape[1]
    recorder = AfterEosRecorder(model, token_id, eos, prompt_width, input_ids.shape[0], input_ids.device)
    processors = LogitsProcessorList(kwargs.pop("logits_processor", None) or [])
    processors.append(recorder)
    handle = backbone(model).register_forward_hook(recorder.capture)
    try:
        output = generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            logits_processor=processors,
            return_dict_in_generate=True,
            use_cache=True,
            **kwargs,
        )
        completions = output.sequences[:, prompt_width:]
        last_step = torch.isin(completions, eos).any(dim=1) & ~recorder.recorded
        if last_step.any():
            _read_last_step(model, recorder, last_step, output, input_ids, attention_mask, completions)
    finally:
        handle.remove()
    return output.sequences, recorder.log_probs


def _read_last_step(model, recorder, rows, output, input_ids, attention_mask, completions) -> None:
    """Rows whose first EOS is the last generated token: generation stopped before feeding it, so feed it now, one
    decode step on the returned cache (the backbone hook records the hidden state)."""
    mask = torch.cat([attention_mask, torch.ones_like(completions)], dim=1)
    cache = getattr(output, "past_key_values", None)
    if cache is None:  # a model without a cache: one forward over these rows, read at their last position
        ids = torch.cat([input_ids, completions], dim=1)[rows]
        positions = torch.full((ids.shape[0],), ids.shape[1] - 1, device=ids.device)
        with capture_hidden_states(model, positions) as capture:
            backbone(model)(input_ids=ids, attention_mask=mask[rows], position_ids=position_ids_from_mask(mask[rows]))
        recorder.log_probs[rows] = token_log_probs(model, capture.hidden_states(), recorder.token_id)
        recorder.recorded |= rows
        return
    backbone(model)(
        input_ids=completions[:, -1:],
        attention_mask=mask,
        position_ids=position_ids_from_mask(mask)[:, -1:],
        past_key_values=cache,
        use_cache=True,
    )
    recorder.record(rows)
