"""LaSeR composed with TRL's GRPO options (the README's composition table): the alignment term is added on top of
every TRL loss unchanged, the verifier target is the named reward function whatever the weights, the mixed
advantage follows `scale_rewards`, and the options that change the training loop train."""

import math

import pytest
import torch
from datasets import Dataset
from trl import GRPOTrainer

from trl_laser.testing import log_probs_by_hand, parity_reward


Z_C, BETA, C_REF = 3, 0.5, -4.0
TRL_LOSS_TYPES = ["grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo"]


def test_the_loss_type_list_is_trl_own():
    """Fails when TRL adds or drops a loss type, so that the table and the test below follow."""
    from trl import GRPOConfig

    help_text = GRPOConfig.__dataclass_fields__["loss_type"].metadata["help"]
    listed = help_text.split("Supported values are ")[1].split(". ")[0]
    assert sorted(name.strip(" '") for name in listed.replace(", and", ",").split(",")) == sorted(TRL_LOSS_TYPES)


def generation_batch(trainer):
    trainer.model.train()
    return trainer._generate_and_score_completions(next(iter(trainer.get_train_dataloader())))


def alignment_term(trainer, output):
    trainer.current_gradient_accumulation_steps = 1
    model = trainer.model
    return (trainer._compute_loss(model, output) - GRPOTrainer._compute_loss(trainer, model, output)).item()


def expected_term(trainer, output, coef: float) -> float:
    log_probs, finished = log_probs_by_hand(trainer.model, output)
    scores = BETA * (log_probs - C_REF)
    weights, targets = output["self_reward_weights"], output["self_reward_targets"]
    return coef * (weights * (scores - targets).square()).sum().item() / finished.sum().item()


@pytest.mark.parametrize(
    "loss_type, level",
    [(name, "token") for name in TRL_LOSS_TYPES if name != "luspo"]
    + [("luspo", "sequence"), ("grpo", "sequence"), ("dapo", "sequence")],
)
def test_alignment_term_is_added_to_every_trl_loss(loss_type, level, make_trainer, one_thread):
    trainer = make_trainer(
        loss_type=loss_type, importance_sampling_level=level, self_reward_coef=0.7, self_reward_beta=BETA,
        self_reward_ref_constant=C_REF,
    )  # fmt: skip
    output = generation_batch(trainer)
    assert 0 < output["self_reward_num_valid"].item()
    assert alignment_term(trainer, output) == pytest.approx(expected_term(trainer, output, 0.7), rel=1e-4, abs=1e-7)


def test_plain_text_prompts(tmp_path, tiny_model_dir, one_thread):
    from trl_laser.testing import make_trainer

    dataset = Dataset.from_dict({"prompt": [f"What is {i} + {i % 3}? Answer:" for i in range(32)]})
    trainer = make_trainer(
        tmp_path, tiny_model_dir, dataset, self_reward_coef=1.0, self_reward_beta=BETA, self_reward_ref_constant=C_REF
    )
    output = generation_batch(trainer)
    assert alignment_term(trainer, output) == pytest.approx(expected_term(trainer, output, 1.0), rel=1e-4, abs=1e-7)
    trainer.train()
    assert all(math.isfinite(h["self_reward/loss"]) for h in trainer.state.log_history if "self_reward/loss" in h)


def test_several_reward_functions_with_weights(make_trainer, one_thread):
    """TRL's advantage uses the weighted sum of all rewards; LaSeR's target is the named function alone."""

    def brevity(completions, **kwargs):
        return [-0.1 * len(c[0]["content"]) for c in completions]

    trainer = make_trainer(
        reward_funcs=[brevity, parity_reward], reward_weights=[0.5, 2.0], self_reward_target="parity_reward",
        self_reward_coef=1.0, self_reward_beta=BETA, self_reward_ref_constant=C_REF,
    )  # fmt: skip
    output = generation_batch(trainer)
    texts = trainer.processing_class.batch_decode(output["completion_ids"], skip_special_tokens=True)
    parity = torch.tensor([float(len(t) % 2 == 0) for t in texts])
    assert torch.equal(output["self_reward_targets"], parity)
    rewards = trainer._rewards_per_func
    assert torch.allclose(rewards[:, 0], torch.tensor([-0.1 * len(t) for t in texts]))
    assert trainer._metrics["train"]["reward"][-1] == pytest.approx((rewards @ torch.tensor([0.5, 2.0])).mean().item())
    assert alignment_term(trainer, output) == pytest.approx(expected_term(trainer, output, 1.0), rel=1e-4, abs=1e-7)


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_mixed_advantage_follows_scale_rewards(scale, make_trainer, one_thread):
    """τ = 1: the advantage is the self-reward advantage alone, normalised as TRL normalises the verifier's
    (`scale_rewards`): (s − mean_group(s)) / σ with σ the group std, the batch std, or 1."""
    trainer = make_trainer(
        scale_rewards=scale, self_reward_coef=0.0, self_reward_advantage_coef=1.0, self_reward_beta=BETA,
        self_reward_ref_constant=-5.5, self_reward_advantage_std_threshold=0.0,
    )  # fmt: skip
    log_probs, finished = log_probs_by_hand(trainer.model, generation_batch(trainer))  # weights before any update
    trainer = make_trainer(
        name="again", scale_rewards=scale, self_reward_coef=0.0, self_reward_advantage_coef=1.0,
        self_reward_beta=BETA, self_reward_ref_constant=-5.5, self_reward_advantage_std_threshold=0.0,
    )  # fmt: skip
    output = generation_batch(trainer)
    s = torch.where(finished, (BETA * (log_probs + 5.5)).clamp(0, 1), 0.0).view(-1, 4)
    assert (s.std(dim=1) > 0).all() and ((s > 0) & (s < 1)).any(), "the check needs spread, unclipped scores"
    sigma = {"group": s.std(dim=1, keepdim=True), "batch": s.std(), "none": torch.tensor(1.0)}[scale]
    expected = ((s - s.mean(dim=1, keepdim=True)) / sigma).view(-1)
    assert torch.allclose(output["advantages"], expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "overrides",
    [
        {"steps_per_generation": 2, "num_iterations": 2, "per_device_train_batch_size": 4},
        {"importance_sampling_level": "sequence", "loss_type": "grpo", "gradient_checkpointing": True},
        {"loss_type": "cispo", "self_reward_advantage_coef": 0.1, "scale_rewards": "batch"},
    ],
    ids=["steps_per_generation-num_iterations", "gspo-gradient_checkpointing", "cispo-mixing-batch_scale"],
)
def test_training_loop_options_train(overrides, make_trainer, one_thread):
    trainer = make_trainer(self_reward_coef=1.0, self_reward_beta=BETA, max_steps=4, **overrides)
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    trainer.train()
    logs = [h for h in trainer.state.log_history if "self_reward/loss" in h]
    assert len(logs) == 4 and all(math.isfinite(h["loss"]) for h in logs)
    # None: no finished completion in that step's micro-batches (4 rows each with steps_per_generation=2)
    values = [h["self_reward/loss"] for h in logs if h["self_reward/loss"] is not None]
    assert len(values) >= 2 and all(math.isfinite(v) for v in values)
    head = trainer.model.get_output_embeddings().weight
    assert not torch.equal(before["lm_head.weight"][Z_C], head[Z_C].detach())  # z_c's row is trained


def test_peft_lora_with_a_new_token_trains_it_through_modules_to_save(tmp_path, tiny_model_dir, prompt_dataset):
    """A z_c added to the tokenizer has an untrained output row; with LoRA the head is frozen unless it is in
    `modules_to_save`. Then its row (and only the saved copy) is trained."""
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trl_laser.testing import make_trainer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<verify>"]})
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model.resize_token_embeddings(len(tokenizer))
    new_id = tokenizer.convert_tokens_to_ids("<verify>")
    peft_config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], modules_to_save=["lm_head"])
    trainer = make_trainer(
        tmp_path, model, prompt_dataset, self_reward_token="<verify>", self_reward_coef=1.0,
        trainer_kwargs={"peft_config": peft_config, "processing_class": tokenizer},
    )  # fmt: skip
    assert trainer.self_reward_token_id == new_id
    head = trainer.accelerator.unwrap_model(trainer.model).base_model.model.lm_head
    before = head.modules_to_save["default"].weight[new_id].detach().clone()
    original = head.original_module.weight[new_id].detach().clone()
    trainer.train()
    assert any(math.isfinite(h["self_reward/loss"]) for h in trainer.state.log_history if "self_reward/loss" in h)
    assert not torch.equal(head.modules_to_save["default"].weight[new_id].detach(), before)
    assert torch.equal(head.original_module.weight[new_id].detach(), original)
