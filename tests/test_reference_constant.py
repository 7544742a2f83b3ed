import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from trl_laser import estimate_reference_constant
from trl_laser.cli import main
from trl_laser.core.recipe import SelfRewardConfig
from trl_laser.scoring.scorer import SelfRewardScorer


PROMPTS = [[{"role": "user", "content": f"What is {i} + 1?"}] for i in range(6)]


def test_estimate_matches_full_forward_log_probs(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    result = estimate_reference_constant(
        model, tokenizer, PROMPTS, token="<reserved_1>", num_samples=3, max_new_tokens=48, seed=7
    )
    # the same samples again, and log π(z_c | x, y) from a plain full forward of each finished sequence
    samples = SelfRewardScorer(model, tokenizer, SelfRewardConfig(token=4, beta=1.0, ref_constant=0.0)).generate(
        PROMPTS, num_samples=3, max_new_tokens=48, seed=7, batch_size=8
    )
    values = []
    for sample in samples:
        prompt_ids = tokenizer.apply_chat_template(sample.prompt, add_generation_prompt=True, tokenize=True)
        prompt_ids = (
            prompt_ids["input_ids"] if isinstance(prompt_ids, dict) or hasattr(prompt_ids, "keys") else prompt_ids
        )
        for ids, finished in zip(sample.token_ids, sample.finished, strict=True):
            if finished:
                with torch.no_grad():
                    logits = model(torch.tensor([list(prompt_ids) + list(ids)])).logits[0, -1]
                values.append(logits.log_softmax(-1)[4].item())
    assert values, "the seed should give finished completions"
    assert (result.token, result.token_id) == ("<reserved_1>", 4)
    assert result.num_completions == len(values) and result.num_unfinished == 18 - len(values)
    assert result.mean == pytest.approx(sum(values) / len(values), abs=1e-4)
    assert result.std == pytest.approx(torch.tensor(values).std().item(), abs=1e-4)


def test_estimate_constant_command(tmp_path, tiny_model_dir, capsys):
    output = tmp_path / "c_ref.json"
    code = main(
        ["estimate-constant", "--model-name-or-path", tiny_model_dir, "--dataset_name", "builtin:compare",
         "--num-problems", "3", "--num_samples", "3", "--max-new-tokens", "48", "--self-reward-token", "<reserved_0>",
         "--output_file", str(output)]
    )  # fmt: skip
    assert code == 0
    saved = json.loads(output.read_text())
    assert saved["token_id"] == 3 and saved["num_completions"] > 0
    assert f"--self_reward_ref_constant {saved['mean']:.4f}" in capsys.readouterr().out


def test_no_finished_completion_is_an_error(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    with pytest.raises(ValueError, match="Raise max_new_tokens"):
        estimate_reference_constant(model, tokenizer, PROMPTS[:1], token=3, num_samples=1, max_new_tokens=1, seed=0)
