"""Choosing and validating the self-reward token z_c.

z_c must be a token the policy never produces and never reads: if it appeared in the chat template or in
completions, training its log-prob would interfere with generation (and if it were EOS or pad, with the completion
boundaries). A special token reserved by the tokenizer but unused by the model fits.
"""

import torch
from accelerate import PartialState
from accelerate.logging import get_logger
from torch import nn
from torch.distributed.tensor import DTensor


logger = get_logger(__name__)

# The LaSeR authors' choices: Qwen2.5 (`<|vision_start|>`, id 151652) and Llama-3 based models (id 128002).
PREFERRED_TOKENS = ("<|vision_start|>", "<|reserved_special_token_0|>")

_SAMPLE_CONVERSATION = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is 1 + 1?"},
    {"role": "assistant", "content": "2"},
    {"role": "user", "content": "And 2 + 2?"},
]


def chat_template_token_ids(tokenizer) -> set[int]:
    """Ids of the tokens the chat template writes (role markers, separators, default system prompt)."""
    if getattr(tokenizer, "chat_template", None) is None:
        return set()
    ids = set()
    for conversation in (_SAMPLE_CONVERSATION, _SAMPLE_CONVERSATION[1:]):
        rendered = tokenizer.apply_chat_template(conversation, tokenize=True, add_generation_prompt=True)
        if isinstance(rendered, dict) or hasattr(rendered, "input_ids"):
            rendered = rendered["input_ids"]
        ids.update(int(i) for i in rendered)
    return ids


def _special_token_ids(tokenizer) -> list[int]:
    ids = set(tokenizer.all_special_ids)
    ids.update(i for i, token in tokenizer.added_tokens_decoder.items() if token.special)
    return sorted(ids)


def _reserved_ids(tokenizer, eos_token_ids) -> dict[int, str]:
    reserved = {int(i): "an EOS token" for i in eos_token_ids if i is not None}
    for name in ("eos", "pad", "bos", "unk"):
        token_id = getattr(tokenizer, f"{name}_token_id", None)
        if token_id is not None:
            reserved.setdefault(int(token_id), f"the {name.upper()} token")
    return reserved


def _output_rows(model: nn.Module) -> torch.Tensor:
    return model.get_output_embeddings().weight


def _vocab_rows(model: nn.Module) -> int:
    # From the config: under ZeRO-3 or FSDP's low-memory loading the head's weight is partitioned or on `meta`.
    return model.config.get_text_config().vocab_size


def _readable(weight: torch.Tensor) -> bool:
    return weight.device.type != "meta" and weight.dim() == 2 and weight.numel() > 0 and type(weight) is not DTensor


def _has_twin(weight: torch.Tensor, token_id: int) -> bool:
    """Whether another token has exactly the same output-embedding row (an untrained, shared initialisation):
    training z_c's logit would then raise its twin's too, and the twin could start being sampled.

    Weights that are sharded or not materialised here (ZeRO-3, FSDP) cannot be compared: reported as no twin."""
    if not _readable(weight):
        return False
    with torch.no_grad():
        return int((weight == weight[token_id]).all(dim=1).sum()) > 1


def resolve_self_reward_token(
    tokenizer, model: nn.Module, token: str | int = "auto", eos_token_ids=()
) -> tuple[str, int]:
    """Return `(token_string, token_id)` for the self-reward token, validating a user choice or picking one.

    `"auto"` takes the first usable special token: the authors' choice when the tokenizer has it, otherwise the
    lowest-id special token that is not EOS/pad/BOS/UNK, is not written by the chat template, and does not share its
    output-embedding row with another token.
    """
    PartialState()  # accelerate's logger needs its state, also outside `accelerate launch`
    vocab_rows = _vocab_rows(model)
    reserved = _reserved_ids(tokenizer, eos_token_ids)
    template_ids = chat_template_token_ids(tokenizer)

    if token == "auto":
        weight = _output_rows(model)
        if not _readable(weight):
            logger.warning("The output embeddings are sharded here; 'auto' cannot check tokens for shared rows.")
        preferred = [tokenizer.convert_tokens_to_ids(t) for t in PREFERRED_TOKENS if t in tokenizer.get_vocab()]
        for candidate in preferred + _special_token_ids(tokenizer):
            if candidate in reserved or candidate in template_ids or candidate >= vocab_rows:
                continue
            if _has_twin(weight, candidate):
                continue
            string = tokenizer.convert_ids_to_tokens(candidate)
            logger.info(f"self_reward_token='auto' picked {string!r} (id {candidate}) as the self-reward token.")
            return string, candidate
        raise ValueError(
            "self_reward_token='auto' found no usable special token in this tokenizer (every special token is EOS, "
            "pad, BOS, used by the chat template, or shares its embedding row with another token). Pass a token "
            "string or id that the model never generates, e.g. a reserved token, with `self_reward_token=...`."
        )

    if isinstance(token, str) and token.lstrip("-").isdigit():
        token = int(token)
    if isinstance(token, int):
        if not 0 <= token < vocab_rows:
            raise ValueError(
                f"self_reward_token={token} is not a token id of this model (its vocabulary has {vocab_rows} "
                "rows). Pick an id in range, or pass a token string."
            )
        token_id = token
        string = tokenizer.convert_ids_to_tokens(token_id)
    else:
        if token not in tokenizer.get_vocab():
            raise ValueError(
                f"self_reward_token={token!r} is not a single token of this tokenizer. Pass one entry of the "
                "vocabulary (a special token such as a reserved one), its id, or 'auto'."
            )
        string, token_id = token, tokenizer.convert_tokens_to_ids(token)
        if token_id >= vocab_rows:
            raise ValueError(
                f"self_reward_token={token!r} has id {token_id}, beyond the model's {vocab_rows} output rows."
            )
    if token_id in reserved:
        raise ValueError(
            f"self_reward_token={string!r} (id {token_id}) is {reserved[token_id]}; the score is read right after "
            "EOS, so z_c must be a token the model never emits or pads with. Use 'auto' or a reserved special token."
        )
    if _has_twin(_output_rows(model), token_id):
        logger.warning(
            f"self_reward_token={string!r} (id {token_id}) shares its output-embedding row with another token: "
            "training its logit moves the other's too. 'auto' picks a token without such a twin."
        )
    if token_id not in _special_token_ids(tokenizer):
        logger.warning(
            f"self_reward_token={string!r} (id {token_id}) is an ordinary token that the model writes in text. z_c "
            "must be a token the policy never emits: training its probability would change what the model writes, "
            "and its score would mix with its use in text. Use 'auto' or a reserved special token."
        )
    if token_id in template_ids:
        raise ValueError(
            f"self_reward_token={string!r} (id {token_id}) is written by the chat template, so the model reads and "
            "writes it in every conversation. Use 'auto' or a reserved special token the template does not use."
        )
    return string, token_id
