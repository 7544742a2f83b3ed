import warnings

import pytest
import torch
from trl import TrlParser

from trl_laser import LaSeRConfig, SelfRewardConfig, load_self_reward_config
from trl_laser.core.token import resolve_self_reward_token
from trl_laser.testing import tiny_model, tiny_tokenizer


@pytest.fixture(scope="module")
def tokenizer_and_model():
    tokenizer = tiny_tokenizer()
    return tokenizer, tiny_model(tokenizer)


def test_auto_picks_unused_special_token(tokenizer_and_model):
    tokenizer, model = tokenizer_and_model
    assert resolve_self_reward_token(tokenizer, model, "auto", eos_token_ids=[2]) == ("<reserved_0>", 3)


def test_auto_skips_tokens_sharing_an_embedding_row(tokenizer_and_model):
    tokenizer, model = tokenizer_and_model
    with torch.no_grad():
        original = model.lm_head.weight[3].clone()
        model.lm_head.weight[3] = model.lm_head.weight[4]  # <reserved_0> and <reserved_1> become twins
    try:
        assert resolve_self_reward_token(tokenizer, model, "auto", eos_token_ids=[2]) == ("<reserved_2>", 5)
    finally:
        with torch.no_grad():
            model.lm_head.weight[3] = original


def test_explicit_token_by_string_or_id(tokenizer_and_model):
    tokenizer, model = tokenizer_and_model
    assert resolve_self_reward_token(tokenizer, model, "<reserved_1>") == ("<reserved_1>", 4)
    assert resolve_self_reward_token(tokenizer, model, 5) == ("<reserved_2>", 5)
    assert resolve_self_reward_token(tokenizer, model, "5") == ("<reserved_2>", 5)


@pytest.mark.parametrize(
    "token, message",
    [
        ("<|im_end|>", "is an EOS token"),
        (2, "is an EOS token"),
        ("<|im_start|>", "BOS token"),
        ("<|endoftext|>", "UNK token"),
        ("not-a-token", "not a single token"),
        (10_000, "not a token id of this model"),
        ("\n", "written by the chat template"),
    ],
)
def test_bad_tokens_are_rejected_with_the_fix(tokenizer_and_model, token, message):
    tokenizer, model = tokenizer_and_model
    with pytest.raises(ValueError, match=message):
        resolve_self_reward_token(tokenizer, model, token, eos_token_ids=[2])


def test_pad_token_is_rejected():
    tokenizer = tiny_tokenizer(pad_is_eos=False)
    with pytest.raises(ValueError, match="PAD token"):
        resolve_self_reward_token(tokenizer, tiny_model(tokenizer), "<|endoftext|>")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"self_reward_coef": -1.0}, "self_reward_coef"),
        ({"self_reward_beta": 0.0}, "self_reward_beta"),
        ({"self_reward_advantage_coef": 1.5}, "self_reward_advantage_coef"),
        ({"reasoning_warmup_steps": -1}, "reasoning_warmup_steps"),
        ({"self_reward_use_ref_model": True, "self_reward_ref_constant": -20.0}, "one or the other"),
        ({"self_reward_remeasure_ref_constant": True}, "Set reasoning_warmup_steps > 0"),
        (
            {"self_reward_remeasure_ref_constant": True, "reasoning_warmup_steps": 20, "steps_per_generation": 8},
            "every 8 optimizer steps here .* got 20. Use a multiple of 8",
        ),
        (
            {
                "self_reward_remeasure_ref_constant": True,
                "reasoning_warmup_steps": 5,
                "self_reward_use_ref_model": True,
            },
            "does not use",
        ),
    ],
)
def test_config_validation(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        LaSeRConfig(output_dir=str(tmp_path), **kwargs)


@pytest.mark.parametrize(
    "kwargs, exact_every",
    [
        ({"save_steps": 20, "steps_per_generation": 8}, 8),  # the checkpoint at step 20 falls inside steps 16-23
        ({"save_steps": 6, "steps_per_generation": 8, "gradient_accumulation_steps": 2}, 4),  # 12 micro-steps
        ({"save_steps": 3, "steps_per_generation": 2, "num_iterations": 2}, 4),  # a batch serves 2 x 2 steps
        ({"save_steps": 24, "steps_per_generation": 8}, None),
        ({"save_steps": 4, "steps_per_generation": 8, "gradient_accumulation_steps": 2}, None),  # 8 micro-steps
        ({"save_steps": 20, "steps_per_generation": 8, "save_strategy": "no"}, None),
        ({"save_steps": 0.3, "steps_per_generation": 8}, None),  # a fraction of the run: its steps are not known yet
        ({}, None),  # TRL's defaults: one generation batch per optimizer step
    ],
)
def test_checkpoints_inside_a_generation_batch_warn(tmp_path, kwargs, exact_every):
    """The generation batch lives in memory only: a checkpoint inside one does not resume exactly, so say so."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        LaSeRConfig(output_dir=str(tmp_path), per_device_train_batch_size=8, num_generations=8, **kwargs)
    messages = [str(w.message) for w in caught if "inside a generation batch" in str(w.message)]
    if exact_every is None:
        assert messages == []
    else:
        assert len(messages) == 1 and messages[0].endswith(f"set save_steps to a multiple of {exact_every}.")


def test_trl_parser_exposes_laser_fields(tmp_path):
    config_file = tmp_path / "recipe.yaml"
    config_file.write_text("self_reward_coef: 0.25\nself_reward_token: '<reserved_1>'\n")
    (args,) = TrlParser((LaSeRConfig,)).parse_args_and_config(
        ["--output_dir", str(tmp_path), "--config", str(config_file), "--self_reward_advantage_coef", "0.1"]
    )
    assert args.self_reward_coef == 0.25
    assert args.self_reward_token == "<reserved_1>"
    assert args.self_reward_advantage_coef == 0.1
    assert args.self_reward_beta == 0.1 and args.self_reward_ref_constant is None
    help_text = TrlParser((LaSeRConfig,)).format_help()
    assert "--self_reward_ref_constant" in help_text and "measures it on the first" in help_text


def test_metadata_round_trip_and_errors(tmp_path):
    config = SelfRewardConfig(token="<reserved_0>", token_id=3, beta=0.1, ref_constant=-21.5, ref_constant_std=0.7)
    config.save_pretrained(str(tmp_path))
    assert load_self_reward_config(str(tmp_path)) == config
    with pytest.raises(FileNotFoundError, match="No LaSeR metadata"):
        load_self_reward_config(str(tmp_path / "elsewhere"))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "self_reward_config.json").write_text('{"token": "x"}')
    with pytest.raises(ValueError, match="missing the field"):
        load_self_reward_config(str(tmp_path / "bad"))
