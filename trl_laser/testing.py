"""Tiny offline models for tests and examples (a character-level ChatML tokenizer and a few-layer Llama), and the
helpers the tests share: a trainer builder and a fake generator."""

import socket
import string

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast


SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<reserved_0>", "<reserved_1>", "<reserved_2>"]
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + "
    "'\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def tiny_tokenizer(pad_is_eos: bool = True) -> PreTrainedTokenizerFast:
    """Character-level tokenizer with ChatML special tokens (ids 0-5) and printable ASCII.

    EOS is `<|im_end|>` (id 2); pad is EOS (as in SmolLM2 and the LaSeR authors' models) or `<|endoftext|>` (id 0).
    """
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    for char in string.printable:
        vocab.setdefault(char, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    backend.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|im_end|>" if pad_is_eos else "<|endoftext|>",
        bos_token="<|im_start|>",
        unk_token="<|endoftext|>",
        additional_special_tokens=SPECIAL_TOKENS[3:],
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def tiny_model(
    tokenizer: PreTrainedTokenizerFast,
    seed: int = 0,
    hidden_size: int = 32,
    layers: int = 2,
    vocab_size: int | None = None,
    num_attention_heads: int = 4,
) -> LlamaForCausalLM:
    """A randomly initialised Llama (two layers by default) sized for `tokenizer` or `vocab_size` (float32)."""
    import torch

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size or len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def save_tiny_model(directory: str, pad_is_eos: bool = True, seed: int = 0, **model_kwargs) -> str:
    """Write a tiny model (`model_kwargs` go to `tiny_model`) and its tokenizer to `directory` (loadable by path,
    like a Hub id)."""
    tokenizer = tiny_tokenizer(pad_is_eos=pad_is_eos)
    tiny_model(tokenizer, seed=seed, **model_kwargs).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


# ---------------------------------------------------------------------------------------------------------------------
# Shared by the tests: a trainer builder and a fake generator


EOS_ID = 2  # `<|im_end|>` in `tiny_tokenizer`
TRAINING_DEFAULTS = dict(
    per_device_train_batch_size=8,
    num_generations=4,
    max_completion_length=6,
    max_steps=2,
    learning_rate=1e-3,
    report_to="none",
    logging_steps=1,
    gradient_checkpointing=False,
    use_cpu=True,
    save_strategy="no",
    seed=0,
    # make the random tiny model end most completions with EOS, so that both scoring paths get exercised
    generation_kwargs={"sequence_bias": [[[EOS_ID], 3.0]]},
)


Z_C_ID = 3  # `<reserved_0>` in `tiny_tokenizer`, the self-reward token of the tests


def log_probs_by_hand(model, output, token_id: int = Z_C_ID, eos_id: int = EOS_ID):
    """The oracle the tests compare the trainer with: log π(z_c | x, y) from a plain full-logits forward (untempered,
    the model's own head) at the position of each completion's first EOS, and whether each completion finished.
    Gradients flow; wrap the call in `torch.no_grad()` when only values are needed."""
    import torch

    input_ids = torch.cat([output["prompt_ids"], output["completion_ids"]], dim=1)
    attention_mask = torch.cat([output["prompt_mask"], output["completion_mask"]], dim=1)
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    finished, positions = [], []
    for ids, mask in zip(output["completion_ids"].tolist(), output["completion_mask"].tolist(), strict=True):
        length = sum(mask)
        finished.append(length > 0 and ids[length - 1] == eos_id)
        positions.append(output["prompt_ids"].size(1) + (ids.index(eos_id) if eos_id in ids[:length] else 0))
    rows = logits[torch.arange(len(positions)), torch.tensor(positions)].log_softmax(-1)[:, token_id]
    return rows, torch.tensor(finished)


def parity_reward(completions, **kwargs) -> list[float]:
    """Deterministic 0/1 reward: 1 when the completion has an even number of characters."""
    from .tasks.answers import completion_text

    return [float(len(completion_text(c)) % 2 == 0) for c in completions]


def tiny_training_args(output_dir, config_class=None, **overrides):
    """Arguments sized for the tiny model on a CPU (`TRAINING_DEFAULTS`; `self_reward_token="<reserved_0>"` for a
    `LaSeRConfig`, the default `config_class`), with `overrides` on top."""
    from .training.config import LaSeRConfig

    config_class = config_class or LaSeRConfig
    args = dict(TRAINING_DEFAULTS, output_dir=str(output_dir))
    if issubclass(config_class, LaSeRConfig):
        args["self_reward_token"] = "<reserved_0>"
    return config_class(**{**args, **overrides})


def make_trainer(
    output_dir,
    model: str,
    train_dataset,
    reward_funcs=parity_reward,
    trainer_class=None,
    trainer_kwargs: dict | None = None,
    **config_overrides,
):
    """A trainer on `model` with `tiny_training_args(output_dir, **config_overrides)`.

    `trainer_class` defaults to `LaSeRGRPOTrainer` (with a `LaSeRConfig`); any other class gets TRL's `GRPOConfig`.
    `trainer_kwargs` go to the trainer (`eval_dataset`, `peft_config`, `processing_class`, ...).
    """
    from trl import GRPOConfig

    from .training.trainer import LaSeRGRPOTrainer

    trainer_class = trainer_class or LaSeRGRPOTrainer
    config_class = None if issubclass(trainer_class, LaSeRGRPOTrainer) else GRPOConfig
    args = tiny_training_args(output_dir, config_class, **config_overrides)
    return trainer_class(
        model=model, reward_funcs=reward_funcs, args=args, train_dataset=train_dataset, **(trainer_kwargs or {})
    )


class FakeGenerator:
    """A stand-in for `SelfRewardScorer` in tests of the correction pipeline: no model, scripted text.

    `respond(conversation, assistant_prefix, num_samples)` returns the texts. As in real generation, a text is cut
    right after the first stop string it holds; a text ending in "..." stands for one cut by the token limit; any
    other one finished with EOS. Tokens are whitespace-separated words. `score(prompts, completions)`, if given,
    answers `SelfRewardScorer.score`. The fake records the assistant prefixes it was given and counts requests.
    """

    def __init__(self, respond, score=None):
        self.respond = respond
        self._score = score
        self.prefixes: list[str] = []
        self.requests = 0

    @classmethod
    def scripted(cls, script: dict[str, list[str]], score=None) -> "FakeGenerator":
        """`script[question]` lists, in order, what the "model" writes at each call for the conversation whose last
        user turn is `question`."""
        remaining = {question: list(texts) for question, texts in script.items()}
        return cls(lambda conversation, prefix, n: [remaining[conversation[-1]["content"]].pop(0)] * n, score)

    def generate(self, prompts, num_samples=1, max_new_tokens=256, *, assistant_prefixes=None, stop=None, **sampling):
        from .scoring.scorer import Completion, GeneratedSamples, cut_at_stop

        prefixes = assistant_prefixes or [""] * len(prompts)
        self.requests += len(prompts)
        outputs = []
        for conversation, prefix in zip(prompts, prefixes, strict=True):
            self.prefixes.append(prefix)
            completions = []
            for text in self.respond(conversation, prefix, num_samples):
                truncated = text.endswith("...")
                text, hit = cut_at_stop(text, stop)
                finished = not truncated and hit is None
                completions.append(Completion(text, [0] * len(text.split()), finished, stop=hit))
            outputs.append(GeneratedSamples(conversation, completions))
        return outputs

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def score(self, prompts, completions) -> list[float | None]:
        if self._score is None:
            raise AssertionError("this fake generator was given no scores")
        return self._score(prompts, completions)


def free_port() -> int:
    """A TCP port on the loopback interface that no process is listening on now (for multi-process test runs)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
