"""Reading log π(z_c | x, y) from the hidden state of the completion's last token.

The score lives one position past the completion: the next-token distribution computed from the hidden state of
the EOS token. That hidden state is already computed by any forward pass over prompt + completion, so we take it
from there (a forward hook on the backbone keeps just one row per sequence) and project that single row through the
LM head. This costs one row of LM head per sequence and no extra pass over the backbone.

The projection is untempered: the score is defined on the plain (temperature 1) distribution, whatever temperature
the completions were sampled with.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.distributed.tensor import DTensor, Partial


def causal_lm(model: nn.Module) -> nn.Module:
    """The `*ForCausalLM` module inside `model` (unwrapping accelerate / DDP and PEFT wrappers)."""
    while hasattr(model, "module") and isinstance(model.module, nn.Module):  # DDP, DeepSpeed engine
        model = model.module
    if hasattr(model, "get_base_model") and hasattr(model, "peft_config"):  # PEFT: the LM carrying the adapters
        model = model.get_base_model()
    return model


def backbone(model: nn.Module) -> nn.Module:
    """The decoder stack whose output is the final hidden state (`LlamaModel` inside `LlamaForCausalLM`)."""
    lm = causal_lm(model)
    return getattr(lm, lm.base_model_prefix)


class HiddenStateCapture:
    """Collects, from each forward of a backbone, the hidden state at one given position per row.

    Forward passes over a batch may be run in chunks (TRL scores the generation batch `per_device_batch_size` rows
    at a time); chunks arrive in order, so a running row offset maps each chunk to its positions.
    """

    def __init__(self, positions: torch.Tensor):
        self.positions = positions
        self.rows: list[torch.Tensor] = []
        self._offset = 0

    def __call__(self, module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output.last_hidden_state
        batch = hidden.size(0)
        positions = self.positions[self._offset : self._offset + batch].to(hidden.device)
        self.rows.append(hidden[torch.arange(batch, device=hidden.device), positions])
        self._offset += batch

    def hidden_states(self) -> torch.Tensor:
        if self._offset != self.positions.numel():
            raise RuntimeError(
                f"Captured {self._offset} rows but expected {self.positions.numel()}: the forward pass did not cover "
                "the whole batch."
            )
        return torch.cat(self.rows, dim=0)


@contextmanager
def capture_hidden_states(model: nn.Module, positions: torch.Tensor) -> Iterator[HiddenStateCapture]:
    """Within the block, every forward of `model`'s backbone records the final hidden state at `positions` (one
    position per row of the batch, in the order rows are fed)."""
    capture = HiddenStateCapture(positions)
    handle = backbone(model).register_forward_hook(capture)
    try:
        yield capture
    finally:
        handle.remove()


def final_logit_scale(config) -> float:
    """The factor some architectures apply to the LM head's output, read from the config the way TRL's fused LM head
    reads it (Cohere's `logit_scale`, `output_multiplier`, Falcon-H1's `lm_head_multiplier`, Granite / MiniCPM3
    dividing by `logits_scaling`, HyperCLOVA X multiplying by it)."""
    for name in ("logit_scale", "output_multiplier", "lm_head_multiplier"):
        if getattr(config, name, None) is not None:
            return getattr(config, name)
    if getattr(config, "logits_scaling", None) is not None:
        return config.logits_scaling if config.model_type == "hyperclovax" else 1 / config.logits_scaling
    return 1.0


class _GatherShardsAveragingGradients(torch.autograd.Function):
    """All-gather a sharded DTensor parameter; in backward, average the per-process gradients and keep each process's
    shard (a reduce-scatter), as FSDP's own backward does for a parameter used inside its module's forward.

    `DTensor.full_tensor()` alone is not enough here: its backward only keeps the local chunk of the local gradient,
    so each shard would get the gradient of one process's completions only."""

    @staticmethod
    def forward(ctx, weight: DTensor) -> torch.Tensor:
        ctx.mesh, ctx.placements = weight.device_mesh, weight.placements
        return weight.full_tensor()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        partial = DTensor.from_local(grad, ctx.mesh, [Partial("avg")] * ctx.mesh.ndim, run_check=False)
        return partial.redistribute(ctx.mesh, ctx.placements)


def gather_for_data_parallel(weight: DTensor) -> torch.Tensor:
    """The full value of a DTensor parameter sharded over data-parallel processes (FSDP2), with the data-parallel
    gradient (the mean over processes) flowing back to the shard."""
    return _GatherShardsAveragingGradients.apply(weight)


_FLOAT32_CHUNK_ROWS = 16384  # vocabulary rows upcast at a time: 235 MB of float32 for a 3584-wide head


def _with_float32_values(logits: torch.Tensor, hidden_states, weight, bias) -> torch.Tensor:
    """`logits`, a half-precision projection `hidden_states @ weight.T + bias`, with its values recomputed in float32
    from the same (half-precision) numbers, and its gradient left as it is (the projection is linear, so the gradient
    does not depend on how its output was rounded). The float32 copy of the head is made a chunk of rows at a time,
    without gradient, and freed: no vocab x hidden float32 buffer lives until the backward."""
    with torch.no_grad(), torch.autocast(hidden_states.device.type, enabled=False):
        hidden = hidden_states.float()
        exact = torch.cat(
            [
                nn.functional.linear(
                    hidden,
                    weight[start : start + _FLOAT32_CHUNK_ROWS].float(),
                    None if bias is None else bias[start : start + _FLOAT32_CHUNK_ROWS].float(),
                )
                for start in range(0, weight.size(0), _FLOAT32_CHUNK_ROWS)
            ],
            dim=-1,
        )
    if not logits.requires_grad:
        return exact
    logits = logits.float()
    return logits + (exact - logits).detach()


def untempered_logits(model: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
    """Next-token logits at temperature 1 for a few hidden states, as the model's own forward computes them, in
    float32.

    Goes through the LM head module (so PEFT adapters and TRL's fp32 cast apply) and reproduces the final-logit
    transforms some architectures add (logit scales, see `final_logit_scale`, then Gemma-2 soft-capping). A plain
    (`nn.Linear`) head in bf16 / fp16, or under autocast, is projected in float32: log π(z_c) lies far in the tail
    (logits of magnitude 16-32 round to bf16 in steps of 0.125), and only a few rows are projected here.
    """
    lm = causal_lm(model)
    config = lm.config.get_text_config()
    head = lm.get_output_embeddings()
    weight, bias = head.weight, head.bias
    if isinstance(weight, DTensor):
        # FSDP2 shards the head; between forwards its weight is a DTensor, which cannot multiply a plain tensor.
        weight = gather_for_data_parallel(weight)
        bias = gather_for_data_parallel(bias) if bias is not None else None
        logits = nn.functional.linear(hidden_states, weight, bias)
    else:
        logits = head(hidden_states)
    if logits.dtype != torch.float32 and (type(head) is nn.Linear or isinstance(head.weight, DTensor)):
        # (A wrapped head, e.g. a PEFT adapter on it, keeps its own forward and precision.)
        logits = _with_float32_values(logits, hidden_states, weight, bias)
    logits = logits.float()
    scale = final_logit_scale(config)
    if scale != 1.0:
        logits = logits * scale
    softcap = getattr(config, "final_logit_softcapping", None)
    if softcap is not None:
        logits = torch.tanh(logits / softcap) * softcap
    return logits


def token_log_probs(model: nn.Module, hidden_states: torch.Tensor, token_id: int) -> torch.Tensor:
    """log π(token | ·) at temperature 1 from hidden states of shape (B, H); returns shape (B,), float32."""
    return untempered_logits(model, hidden_states).log_softmax(dim=-1)[:, token_id]


def eos_positions(
    completion_ids: torch.Tensor, completion_mask: torch.Tensor, eos_token_ids
) -> tuple[torch.Tensor, torch.Tensor]:
    """Index (within the completion) of the EOS that ends each completion, and whether the completion finished.

    A completion finished when its last unmasked token is an EOS token; TRL cuts completions right after their first
    EOS, so that token is the first EOS too. This works whether EOS equals the pad token or not, because it reads the
    mask, not the padding. Unfinished rows get index 0 (a valid placeholder; callers mask them out).
    """
    lengths = completion_mask.sum(dim=1).long()
    last = (lengths - 1).clamp(min=0)
    last_tokens = completion_ids.gather(1, last.unsqueeze(1)).squeeze(1)
    eos = torch.as_tensor(list(eos_token_ids), device=completion_ids.device)
    finished = (lengths > 0) & torch.isin(last_tokens, eos)
    return torch.where(finished, last, torch.zeros_like(last)), finished
