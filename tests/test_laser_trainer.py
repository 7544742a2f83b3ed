import json
import math
import os

import pytest
import torch
from trl import GRPOConfig, GRPOTrainer
from trl.trainer.utils import split_tensor_dict

from trl_laser import LaSeRConfig, LaSeRGRPOTrainer, load_self_reward_config
from trl_laser.core.readout import eos_positions
from trl_laser.core.self_reward import class_weights
from trl_laser.testing import log_probs_by_hand, parity_reward, tiny_training_args
from trl_laser.training.trainer import FUSED_LM_HEAD, GENERATION, OLD_LOG_PROB_FORWARD


EOS = 2
Z_C = 3  # "<reserved_0>" in the tiny tokenizer


def length_reward(completions, **kwargs):
    return [float(len(c[0]["content"])) for c in completions]


def make_args(tmp_path, config_class=LaSeRConfig, **overrides):
    return tiny_training_args(tmp_path / "out", config_class, **overrides)


def generation_batch(trainer):
    trainer.model.train()
    batch = next(iter(trainer.get_train_dataloader()))
    return trainer._generate_and_score_completions(batch)


def test_matches_grpo_when_laser_is_off(tmp_path, tiny_model_dir, prompt_dataset):
    runs = {}
    for name, trainer_class, config_class, extra in [
        ("grpo", GRPOTrainer, GRPOConfig, {}),
        ("laser", LaSeRGRPOTrainer, LaSeRConfig, {"self_reward_coef": 0.0, "self_reward_advantage_coef": 0.0}),
        # reads and logs the untrained score, and must still train exactly as GRPO
        ("monitor", LaSeRGRPOTrainer, LaSeRConfig, {"self_reward_coef": 0.0, "self_reward_monitor": True}),
    ]:
        args = make_args(tmp_path / name, config_class=config_class, bf16=False, **extra)
        trainer = trainer_class(
            model=tiny_model_dir, reward_funcs=parity_reward, args=args, train_dataset=prompt_dataset
        )
        trainer.train()
        runs[name] = (trainer.state.log_history, {k: v.clone() for k, v in trainer.model.state_dict().items()})
    grpo_logs, grpo_params = runs["grpo"]
    laser_logs, laser_params = runs["laser"]
    assert [h["loss"] for h in grpo_logs if "loss" in h] == [h["loss"] for h in laser_logs if "loss" in h]
    assert all(torch.equal(grpo_params[k], laser_params[k]) for k in grpo_params)
    assert not any(k.startswith("self_reward/") for h in laser_logs for k in h)
    monitor_logs, monitor_params = runs["monitor"]
    assert [h["loss"] for h in grpo_logs if "loss" in h] == [h["loss"] for h in monitor_logs if "loss" in h]
    assert all(torch.equal(grpo_params[k], monitor_params[k]) for k in grpo_params)
    assert all("self_reward/score_correct" in h and "self_reward/auroc" in h for h in monitor_logs if "loss" in h)


# temperature 1: the score comes out of TRL's fused LM head in the loss forward; 0.7: the EOS states are projected
# separately, and the score must stay untempered (`log_probs_by_hand` reads plain logits)
@pytest.mark.parametrize("balance, temperature", [(True, 1.0), (False, 1.0), (True, 0.7), (False, 0.7)])
def test_alignment_term_value_and_gradient(tmp_path, tiny_model_dir, prompt_dataset, balance, temperature):
    alpha, beta, c_ref = 0.5, 0.5, -4.0
    args = make_args(
        tmp_path,
        self_reward_coef=alpha,
        self_reward_beta=beta,
        self_reward_ref_constant=c_ref,
        self_reward_balance=balance,
        per_device_train_batch_size=16,
        temperature=temperature,
        generation_kwargs={"sequence_bias": [[[EOS], 1.5]]},
    )
    trainer = LaSeRGRPOTrainer(
        model=tiny_model_dir, reward_funcs=parity_reward, args=args, train_dataset=prompt_dataset
    )
    output = generation_batch(trainer)
    trainer.current_gradient_accumulation_steps = 1
    model = trainer.model

    laser_loss = trainer._compute_loss(model, output)
    grpo_loss = GRPOTrainer._compute_loss(trainer, model, output)
    term = laser_loss - grpo_loss
    (term_grad,) = torch.autograd.grad(term, model.model.layers[0].mlp.up_proj.weight)

    log_probs, finished = log_probs_by_hand(model, output)
    targets = output["self_reward_targets"]
    assert 0 < finished.sum() < len(finished), "the batch should mix finished and truncated completions"
    assert 0 < targets[finished].sum() < finished.sum(), "the batch should hold both classes"
    scores = beta * (log_probs - c_ref)
    n = int(finished.sum())
    n1 = int((targets[finished] > 0.5).sum())
    weights = torch.tensor(
        [
            0.0 if not f else (n / (2 * n1) if t > 0.5 else n / (2 * (n - n1))) if balance else 1.0
            for f, t in zip(finished.tolist(), targets.tolist(), strict=True)
        ]
    )
    expected = alpha * (weights * (scores - targets).square()).sum() / n
    assert term.item() == pytest.approx(expected.item(), rel=1e-4)
    (expected_grad,) = torch.autograd.grad(expected, model.model.layers[0].mlp.up_proj.weight)
    assert torch.allclose(term_grad, expected_grad, atol=1e-6)
    assert torch.allclose(output["self_reward_weights"], class_weights(targets, finished, balance=balance))


@pytest.mark.parametrize("pad_fixture", ["tiny_model_dir", "tiny_model_dir_distinct_pad"])
def test_loss_forward_scores_z_c_without_changing_grpo_log_probs(tmp_path, prompt_dataset, request, pad_fixture):
    args = make_args(
        tmp_path,
        self_reward_ref_constant=-4.0,
        per_device_train_batch_size=16,
        generation_kwargs={"sequence_bias": [[[EOS], 1.5]]},
    )
    trainer = LaSeRGRPOTrainer(
        model=request.getfixturevalue(pad_fixture), reward_funcs=parity_reward, args=args, train_dataset=prompt_dataset
    )
    output = generation_batch(trainer)
    completion_ids, completion_mask = output["completion_ids"].clone(), output["completion_mask"]
    width = completion_ids.size(1)
    truncated = [i for i in range(len(completion_ids)) if completion_mask[i].all() and EOS not in completion_ids[i]]
    assert len(truncated) >= 2, "the batch should hold truncated completions"
    # one of them ends on its last column instead: the slot after its EOS lies beyond the batch's columns
    completion_ids[truncated[0], -1] = EOS
    output = {**output, "completion_ids": completion_ids}
    input_ids = torch.cat([output["prompt_ids"], completion_ids], dim=1)
    attention_mask = torch.cat([output["prompt_mask"], completion_mask], dim=1)
    positions, finished = eos_positions(completion_ids, completion_mask, trainer.eos_token_ids)
    assert finished[truncated[0]] and positions[truncated[0]] == width - 1 and not finished[truncated[1]]
    assert ((positions < width - 1) & finished).any()

    model = trainer.model
    grpo_logps, grpo_entropies, _ = GRPOTrainer._get_per_token_logps_and_entropies(
        trainer, model, input_ids, attention_mask, width, compute_entropy=True
    )
    trainer._score_request = (positions, finished)
    logps, entropies, _ = trainer._get_per_token_logps_and_entropies(
        model, input_ids, attention_mask, width, compute_entropy=True
    )
    assert trainer._score_request is None, "the request is for one forward only"
    assert logps.shape == grpo_logps.shape and torch.allclose(logps, grpo_logps, atol=1e-5)
    assert torch.allclose(entropies, grpo_entropies, atol=1e-5)
    by_hand, finished_by_hand = log_probs_by_hand(model, output)
    assert torch.equal(finished, finished_by_hand)
    assert torch.allclose(trainer._loss_forward_log_probs[finished], by_hand[finished], atol=1e-4)
    assert (trainer._loss_forward_log_probs[~finished] == 0).all()


def test_alignment_term_takes_no_separate_lm_head_projection(tmp_path, tiny_model_dir, prompt_dataset, monkeypatch):
    import trl_laser.training.trainer as trainer_module

    args = make_args(tmp_path, self_reward_ref_constant=-4.0, per_device_train_batch_size=16)
    trainer = LaSeRGRPOTrainer(
        model=tiny_model_dir, reward_funcs=parity_reward, args=args, train_dataset=prompt_dataset
    )
    output = generation_batch(trainer)
    trainer.current_gradient_accumulation_steps = 1
    trainer._compute_loss(trainer.model, output)  # the first one checks the fused value with one separate projection
    assert trainer._fast_paths[FUSED_LM_HEAD] is True

    def separate_projection(*args, **kwargs):
        raise AssertionError("at temperature 1 the score must come from the loss forward's own LM head")

    monkeypatch.setattr(trainer_module, "token_log_probs", separate_projection)
    term = trainer._compute_loss(trainer.model, output) - GRPOTrainer._compute_loss(trainer, trainer.model, output)
    assert term.item() > 0


def test_term_does_not_depend_on_micro_batch_split(tmp_path, tiny_model_dir, prompt_dataset):
    args = make_args(tmp_path, self_reward_ref_constant=-4.0, per_device_train_batch_size=16, self_reward_beta=0.5)
    trainer = LaSeRGRPOTrainer(
        model=tiny_model_dir, reward_funcs=parity_reward, args=args, train_dataset=prompt_dataset
    )
    output = generation_batch(trainer)
    model = trainer.model

    def term(inputs):
        return (trainer._compute_loss(model, inputs) - GRPOTrainer._compute_loss(trainer, model, inputs)).item()

    trainer.current_gradient_accumulation_steps = 1
    whole = term(output)
    chunks = split_tensor_dict(output, 4)
    # the same generation batch as 4 micro-batches accumulated into one optimizer step
    trainer.args.steps_per_generation = 4
    trainer.current_gradient_accumulation_steps = 4
    assert sum(term(chunk) for chunk in chunks) == pytest.approx(whole, rel=1e-5)
    # ... or into two optimizer steps of 2 micro-batches: each step gets the term of its half of the batch
    trainer.current_gradient_accumulation_steps = 2
    assert sum(term(chunk) for chunk in chunks) == pytest.approx(2 * whole, rel=1e-5)
    assert whole > 0


def test_reference_constant_is_measured_on_first_batch(tmp_path, tiny_model_dir, prompt_dataset):
    args = make_args(tmp_path)
    trainer = LaSeRGRPOTrainer(
        model=tiny_model_dir, reward_funcs=parity_reward, args=args, train_dataset=prompt_dataset
    )
    assert trainer.ref_constant is None
    output = generation_batch(trainer)
    log_probs, finished = log_probs_by_hand(trainer.model, output)
    assert trainer.ref_constant == pytest.approx(log_probs[finished].mean().item(), abs=1e-4)
    assert trainer.ref_constant_std == pytest.approx(log_probs[finished].std().item(), abs=1e-4)
    assert trainer._metrics["train"]["self_reward/ref_constant"] == [trainer.ref_constant]


def test_advantage_mixing_uses_scores_of_the_generating_policy(tmp_path, tiny_model_dir, prompt_dataset):
    common = dict(per_device_train_batch_size=16, self_reward_ref_constant=-4.75, self_reward_beta=4.0)
    plain = LaSeRGRPOTrainer(
        model=tiny_model_dir,
        reward_funcs=parity_reward,
        args=make_args(tmp_path / "a", **common),
        train_dataset=prompt_dataset,
    )
    mixed = LaSeRGRPOTrainer(
        model=tiny_model_dir,
        reward_funcs=parity_reward,
        args=make_args(
            tmp_path / "b", self_reward_advantage_coef=0.3, self_reward_advantage_std_threshold=0.0, **common
        ),
        train_dataset=prompt_dataset,
    )
    torch.manual_seed(0)
    verifier = generation_batch(plain)
    torch.manual_seed(0)
    out = generation_batch(mixed)
    assert torch.equal(verifier["completion_ids"], out["completion_ids"])
    log_probs, finished = log_probs_by_hand(mixed.model, out)
    s = torch.where(finished, (4.0 * (log_probs + 4.75)).clamp(0, 1), 0.0).view(-1, 4)
    std = s.std(dim=1, keepdim=True)
    self_adv = torch.where(std > 0, (s - s.mean(dim=1, keepdim=True)) / std, verifier["advantages"].view(-1, 4))
    expected = 0.7 * verifier["advantages"] + 0.3 * self_adv.view(-1)
    assert torch.allclose(out["advantages"], expected, atol=1e-5)
    assert not torch.allclose(out["advantages"], verifier["advantages"])


def test_warmup_delays_the_alignment_term(tmp_path, tiny_model_dir, prompt_dataset):
    args = make_args(tmp_path, self_reward_ref_constant=-4.0, reasoning_warmup_steps=5, per_device_train_batch_size=16)
    trainer = LaSeRGRPOTrainer(
        model=tiny_model_dir, reward_funcs=parity_reward, args=args, train_dataset=prompt_dataset
    )
    output = generation_batch(trainer)
    trainer.current_gradient_accumulation_steps = 1
    during = trainer._compute_loss(trainer.model, output) - GRPOTrainer._compute_loss(trainer, trainer.model, output)
    assert during.item() == 0.0
    assert trainer._self_reward_window["train"]["rows"], "metrics are accumulated during the warm-up too"
    trainer.state.global_step = 5
    after = trainer._compute_loss(trainer.model, output) - GRPOTrainer._compute_loss(trainer, trainer.model, output)
    assert after.item() > 0.0


def test_reference_constant_is_measured_again_when_the_term_starts(tmp_path, tiny_model_dir, prompt_dataset):
    args = make_args(
        tmp_path,
        self_reward_ref_constant=-4.0,
        reasoning_warmup_steps=2,
        self_reward_remeasure_ref_constant=True,
        per_device_train_batch_size=16,
    )
    trainer = LaSeRGRPOTrainer(
        model=tiny_model_dir, reward_funcs=parity_reward, args=args, train_dataset=prompt_dataset
    )
    generation_batch(trainer)
    trainer.state.global_step = 1  # still in the warm-up
    generation_batch(trainer)
    assert trainer.ref_constant == -4.0
    with torch.no_grad():  # the policy moved during the warm-up
        trainer.model.lm_head.weight[Z_C] += 0.7
    trainer.state.global_step = 2
    output = generation_batch(trainer)
    log_probs, finished = log_probs_by_hand(trainer.model, output)
    assert trainer.ref_constant == pytest.approx(log_probs[finished].mean().item(), abs=1e-4)
    assert trainer.ref_constant_std == pytest.approx(log_probs[finished].std().item(), abs=1e-4)
    assert trainer.ref_constant != pytest.approx(-4.0, abs=0.1)
    assert trainer._metrics["train"]["self_reward/ref_constant"][-1] == trainer.ref_constant
    # the term's scores start from 0 on average under the re-measured constant ...
    trainer.current_gradient_accumulation_steps = 1
    trainer._compute_loss(trainer.model, output)
    scores = args.self_reward_beta * (log_probs[finished] - trainer.ref_constant)
    assert scores.mean().item() == pytest.approx(0.0, abs=1e-5)
    # ... and it is measured once
    measured = trainer.ref_constant
    with torch.no_grad():
        trainer.model.lm_head.weight[Z_C] += 0.7
    trainer.state.global_step = 3
    generation_batch(trainer)
    assert trainer.ref_constant == measured


def test_resume_keeps_the_remeasured_reference_constant(tmp_path, tiny_model_dir, prompt_dataset):
    def run(max_steps, checkpoint=None, save_strategy="steps"):
        args = make_args(
            tmp_path,
            self_reward_ref_constant=-4.0,
            reasoning_warmup_steps=1,
            self_reward_remeasure_ref_constant=True,
            save_strategy=save_strategy,
            save_steps=1,
            max_steps=max_steps,
        )
        trainer = LaSeRGRPOTrainer(
            model=tiny_model_dir, reward_funcs=parity_reward, args=args, train_dataset=prompt_dataset
        )
        trainer.train(resume_from_checkpoint=checkpoint)
        return trainer

    first = run(max_steps=3)
    saved = {
        step: load_self_reward_config(os.path.join(first.args.output_dir, f"checkpoint-{step}")).ref_constant
        for step in (1, 2, 3)
    }
    # checkpoint 1 is the end of the warm-up: the term's first generation batch comes after it
    assert saved[1] == -4.0 and saved[2] != -4.0 and saved[3] == saved[2] == first.ref_constant
    logged = [h["self_reward/ref_constant"] for h in first.state.log_history if "self_reward/ref_constant" in h]
    assert logged[0] == -4.0 and logged[-1] == first.ref_constant

    # resumed past the warm-up: the checkpoint's c_ref, not the argument's and not measured once more
    past = run(max_steps=3, checkpoint=os.path.join(first.args.output_dir, "checkpoint-2"), save_strategy="no")
    assert past.ref_constant == saved[2] and not past._ref_constant_remeasure_pending
    # resumed at the end of the warm-up: measured when the term starts, on the resumed run's batch
    at_start = run(max_steps=2, checkpoint=os.path.join(first.args.output_dir, "checkpoint-1"), save_strategy="no")
    assert at_start.ref_constant not in (-4.0, None) and not at_start._ref_constant_remeasure_pending


@pytest.mark.parametrize(
    "overrides",
    [
        {"loss_type": "grpo", "num_iterations": 2, "gradient_checkpointing": True},
        {"loss_type": "dr_grpo", "gradient_accumulation_steps": 2, "per_device_train_batch_size": 4},
        {"loss_type": "bnpo", "self_reward_advantage_coef": 0.1, "beta": 0.05, "self_reward_use_ref_model": True},
        {"loss_type": "dapo", "eval_strategy": "steps", "eval_steps": 1, "per_device_eval_batch_size": 8},
    ],
    ids=["grpo-iterations", "dr_grpo-accumulation", "bnpo-mixing-ref-model", "dapo-eval"],
)
def test_training_runs_with_grpo_features(tmp_path, tiny_model_dir, prompt_dataset, overrides):
    args = make_args(tmp_path, **overrides)
    trainer = LaSeRGRPOTrainer(
        model=tiny_model_dir,
        reward_funcs=parity_reward,
        args=args,
        train_dataset=prompt_dataset,
        eval_dataset=prompt_dataset.select(range(8)) if args.eval_strategy != "no" else None,
    )
    before = {k: v.clone() for k, v in trainer.model.named_parameters()}
    trainer.train()
    logs = [h for h in trainer.state.log_history if "self_reward/loss" in h]
    assert logs and all(math.isfinite(h["self_reward/loss"]) for h in logs)
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.named_parameters())
    if args.eval_strategy != "no":
        assert any("eval_self_reward/loss" in h for h in trainer.state.log_history)


def test_peft_lora(tmp_path, tiny_model_dir, prompt_dataset, monkeypatch):
    """LoRA with the reference model's real log-prob: the reference is the base model (the adapter disabled), so r_s
    contrasts the adapter with the base. Both log-probs equal the oracle's, r_s starts at 0 (LoRA starts as the
    identity) and moves as the adapter trains, and the base weights stay frozen."""
    from peft import LoraConfig
    from self_reward_records import ScoreOracle

    args = make_args(tmp_path, self_reward_use_ref_model=True, self_reward_coef=1.0, self_reward_beta=0.5)
    trainer = LaSeRGRPOTrainer(
        model=tiny_model_dir,
        reward_funcs=parity_reward,
        args=args,
        train_dataset=prompt_dataset,
        peft_config=LoraConfig(r=4, target_modules=["q_proj", "v_proj"]),
    )
    model = trainer.model
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    oracle = ScoreOracle(trainer, monkeypatch)
    trainer.train()
    assert any(math.isfinite(h["self_reward/loss"]) for h in trainer.state.log_history if "self_reward/loss" in h)
    assert trainer.ref_constant is not None

    assert len(oracle.loss) == 2 and oracle.assert_scores_match() > 0  # log π_θ(z_c), with the adapter
    gaps = []
    for record in oracle.loss:
        finished = record["finished"]
        with torch.no_grad(), model.disable_adapter():  # the base weights are frozen: the oracle reads them now
            ref_by_hand, _ = log_probs_by_hand(model, record["batch"])
        ref_used = record["batch"]["self_reward_ref_log_probs"][finished]
        assert torch.allclose(ref_used, ref_by_hand[finished], atol=1e-4)
        gaps.append((record["used"][finished] - ref_used).abs().max().item())
    assert gaps[0] < 1e-5 < gaps[-1], "r_s is 0 before the first update and moves with the adapter"

    changed = {name for name, p in model.named_parameters() if not torch.equal(before[name], p.detach())}
    assert changed and all("lora_" in name for name in changed)


def test_distinct_pad_token(tmp_path, tiny_model_dir_distinct_pad, prompt_dataset):
    from transformers import AutoTokenizer

    # a right-padding tokenizer: TRL pads prompts on the left itself, and the EOS positions must follow
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir_distinct_pad, padding_side="right")
    args = make_args(tmp_path, self_reward_ref_constant=-4.0, max_steps=1)
    trainer = LaSeRGRPOTrainer(
        model=tiny_model_dir_distinct_pad,
        reward_funcs=parity_reward,
        args=args,
        train_dataset=prompt_dataset,
        processing_class=tokenizer,
    )
    output = generation_batch(trainer)
    assert (output["completion_ids"] == 0).any(), "pad (id 0) differs from EOS (id 2) here"
    trainer.current_gradient_accumulation_steps = 1
    term = trainer._compute_loss(trainer.model, output) - GRPOTrainer._compute_loss(trainer, trainer.model, output)
    log_probs, finished = log_probs_by_hand(trainer.model, output)
    scores = 0.1 * (log_probs + 4.0)
    expected = 0.1 * (output["self_reward_weights"] * (scores - output["self_reward_targets"]).square()).sum()
    assert term.item() == pytest.approx((expected / finished.sum()).item(), rel=1e-4)


def test_checkpoint_carries_scoring_metadata(tmp_path, tiny_model_dir, prompt_dataset):
    from transformers import AutoModelForCausalLM

    from trl_laser.core.readout import capture_hidden_states, token_log_probs

    args = make_args(tmp_path, save_strategy="steps", save_steps=1, max_steps=1)
    trainer = LaSeRGRPOTrainer(
        model=tiny_model_dir, reward_funcs=parity_reward, args=args, train_dataset=prompt_dataset
    )
    trainer.train()
    checkpoint = os.path.join(args.output_dir, "checkpoint-1")
    config = load_self_reward_config(checkpoint)
    assert (config.token, config.token_id, config.beta) == ("<reserved_0>", Z_C, 0.1)
    assert config.ref_constant == pytest.approx(trainer.ref_constant) and config.use_ref_model is False
    card = open(os.path.join(args.output_dir, "README.md")).read()  # TRL writes the card in output_dir
    assert all(tag in card for tag in ("- trl", "- grpo", "- laser")) and "yang2026laser" in card
    # the card tells how to score: token, β_v and c_ref of this run, and the scorer call
    assert f"| `<reserved_0>` ({Z_C}) | 0.1 | {trainer.ref_constant:.4g} |" in card
    assert "SelfRewardScorer.from_pretrained(" in card

    # a built-in task is named, never linked as a Hub dataset that does not exist
    trainer.create_model_card(dataset_name="builtin:compare")
    card = open(os.path.join(args.output_dir, "README.md")).read()
    assert "huggingface.co/datasets/builtin" not in card and "`builtin:compare`" in card
    trainer.create_model_card(dataset_name="openai/gsm8k")
    assert "https://huggingface.co/datasets/openai/gsm8k" in open(os.path.join(args.output_dir, "README.md")).read()

    # scores of the reloaded checkpoint equal those of the model that was saved
    input_ids = torch.tensor([[1, 40, 41, 42, 2, 2], [1, 43, 44, 2, 2, 2]])
    positions = torch.tensor([4, 3])
    reloaded = AutoModelForCausalLM.from_pretrained(checkpoint)
    scores = []
    for model in (trainer.model, reloaded):
        with torch.no_grad(), capture_hidden_states(model, positions) as capture:
            model(input_ids=input_ids)
        scores.append(
            config.beta * (token_log_probs(model, capture.hidden_states(), config.token_id) - config.ref_constant)
        )
    assert torch.allclose(scores[0], scores[1], atol=1e-6)


def test_resume_restores_the_reference_constant(tmp_path, tiny_model_dir, prompt_dataset):
    args = make_args(tmp_path, save_strategy="steps", save_steps=1, max_steps=1)
    trainer = LaSeRGRPOTrainer(
        model=tiny_model_dir, reward_funcs=parity_reward, args=args, train_dataset=prompt_dataset
    )
    trainer.train()
    checkpoint = os.path.join(args.output_dir, "checkpoint-1")
    saved = json.load(open(os.path.join(checkpoint, "self_reward_config.json")))
    resumed = LaSeRGRPOTrainer(
        model=tiny_model_dir,
        reward_funcs=parity_reward,
        args=make_args(tmp_path, save_strategy="no", max_steps=2),
        train_dataset=prompt_dataset,
    )
    resumed.train(resume_from_checkpoint=checkpoint)
    assert resumed.ref_constant == saved["ref_constant"]


def test_training_on_from_a_laser_model_keeps_its_constant(tmp_path, tiny_model_dir, prompt_dataset):
    first = LaSeRGRPOTrainer(
        model=tiny_model_dir,
        reward_funcs=parity_reward,
        args=make_args(tmp_path / "a", max_steps=1),
        train_dataset=prompt_dataset,
    )
    first.train()
    first.save_model(str(tmp_path / "stage1"))
    second = LaSeRGRPOTrainer(
        model=str(tmp_path / "stage1"),
        reward_funcs=parity_reward,
        args=make_args(tmp_path / "b"),
        train_dataset=prompt_dataset,
    )
    assert second.ref_constant == first.ref_constant
    other_token = LaSeRGRPOTrainer(
        model=str(tmp_path / "stage1"),
        reward_funcs=parity_reward,
        args=make_args(tmp_path / "c", self_reward_token="<reserved_1>"),
        train_dataset=prompt_dataset,
    )
    assert other_token.ref_constant is None  # a new token needs its own constant


def test_errors_name_the_fix(tmp_path, tiny_model_dir, prompt_dataset):
    def build(**kwargs):
        reward_funcs = kwargs.pop("reward_funcs", parity_reward)
        args = kwargs.pop("args", None) or make_args(tmp_path, **kwargs.pop("config", {}))
        return LaSeRGRPOTrainer(
            model=tiny_model_dir, reward_funcs=reward_funcs, args=args, train_dataset=prompt_dataset, **kwargs
        )

    with pytest.raises(ValueError, match="set `self_reward_target`"):
        build(reward_funcs=[parity_reward, length_reward])
    with pytest.raises(ValueError, match="not one of the reward functions"):
        build(reward_funcs=[parity_reward, length_reward], config={"self_reward_target": "nope"})
    with pytest.raises(ValueError, match="needs a reference model"):
        build(config={"self_reward_use_ref_model": True})
    with pytest.raises(NotImplementedError, match="tools"):
        build(tools=[len])
    with pytest.raises(TypeError, match="needs a LaSeRConfig"):
        build(args=make_args(tmp_path, config_class=GRPOConfig))
    with pytest.raises(ValueError, match="is an EOS token"):
        build(config={"self_reward_token": "<|im_end|>"})
    trainer = build(reward_funcs=[parity_reward, length_reward], config={"self_reward_target": "length_reward"})
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        generation_batch(trainer)


@pytest.mark.parametrize("hub_strategy", ["every_save", "checkpoint", "all_checkpoints"])
def test_every_pushed_revision_carries_the_scoring_recipe(tmp_path, tiny_model_dir, prompt_dataset, hub_strategy):
    """A stand-in for the Hub client records what each mid-run push uploads (no network)."""
    from unittest import mock

    import transformers.trainer

    uploads = []

    class FakeApi:
        def upload_folder(self, folder_path, path_in_repo=None, **kwargs):
            uploads.append((path_in_repo, sorted(os.listdir(folder_path))))
            return mock.MagicMock(done=lambda: True)

    args = make_args(tmp_path, save_strategy="steps", save_steps=1, max_steps=1, hub_strategy=hub_strategy)
    trainer = LaSeRGRPOTrainer(
        model=tiny_model_dir, reward_funcs=parity_reward, args=args, train_dataset=prompt_dataset
    )
    trainer.train()  # writes checkpoint-1 (push_to_hub is off: nothing is pushed yet)
    trainer.hub_model_id, trainer.push_in_progress = "someone/tiny-laser", None
    recipe = os.path.join(args.output_dir, "self_reward_config.json")
    if os.path.exists(recipe):
        os.remove(recipe)  # only the checkpoint has it, as in the middle of a run
    with mock.patch.object(transformers.trainer, "hf_api", lambda: FakeApi()):
        trainer._push_from_checkpoint(os.path.join(args.output_dir, "checkpoint-1"))
    assert uploads, "nothing was pushed"
    for _, files in uploads:
        assert "self_reward_config.json" in files and "config.json" in files
    card = open(os.path.join(args.output_dir, "README.md")).read()
    assert "someone/tiny-laser" in card and f"({Z_C})" in card


@pytest.mark.parametrize("value, message", [(float("nan"), "finite"), (3.0, "cannot be positive")])
def test_reference_constant_must_be_a_log_probability(tmp_path, value, message):
    with pytest.raises(ValueError, match=message):
        make_args(tmp_path, self_reward_ref_constant=value)


def test_missing_reward_source_gets_trl_own_error(tmp_path, tiny_model_dir, prompt_dataset):
    # GRPOTrainer's `reward_funcs` is optional; LaSeR keeps that contract so TRL's message reaches the user.
    with pytest.raises(Exception) as error:
        LaSeRGRPOTrainer(model=tiny_model_dir, args=make_args(tmp_path), train_dataset=prompt_dataset)
    assert not isinstance(error.value, TypeError), error.value


@pytest.mark.parametrize("temperature, pad_fixture", [(1.0, "tiny_model_dir"), (0.7, "tiny_model_dir_distinct_pad")])
def test_mixing_reads_scores_from_trl_old_log_prob_forward(
    tmp_path, prompt_dataset, request, monkeypatch, temperature, pad_fixture
):
    """With off-policy micro-batches TRL runs a no-grad forward for the old log-probs; the scores for advantage
    mixing come from that forward (no extra pass) and equal those of a separate forward."""
    args = make_args(
        tmp_path,
        steps_per_generation=2,  # > gradient_accumulation_steps: TRL computes old log-probs
        self_reward_ref_constant=-4.6,
        self_reward_beta=5.0,
        self_reward_advantage_coef=0.5,
        self_reward_advantage_std_threshold=0.0,
        temperature=temperature,
    )
    trainer = LaSeRGRPOTrainer(
        model=request.getfixturevalue(pad_fixture), reward_funcs=parity_reward, args=args, train_dataset=prompt_dataset
    )
    assert trainer._runs_old_log_prob_forward
    extra_forwards = []
    original = LaSeRGRPOTrainer._self_reward_log_probs
    monkeypatch.setattr(
        LaSeRGRPOTrainer, "_self_reward_log_probs", lambda *a, **k: extra_forwards.append(1) or original(*a, **k)
    )
    generation_batch(trainer)
    assert len(extra_forwards) == 1, "the first batch checks the captured scores with one separate forward"
    assert trainer._fast_paths[OLD_LOG_PROB_FORWARD] is True
    extra_forwards.clear()
    torch.manual_seed(0)
    output = generation_batch(trainer)
    assert not extra_forwards, "the scores should come from TRL's own forward"
    captured = trainer._policy_log_probs
    positions, finished = eos_positions(output["completion_ids"], output["completion_mask"], trainer.eos_token_ids)
    with torch.no_grad():
        separate = original(trainer, trainer.model, output, positions, finished)
    assert finished.any()
    assert torch.allclose(captured[finished], separate[finished], atol=1e-4)

    # the advantages equal those mixed from the separate forward's scores
    from trl_laser.core.self_reward import mix_advantages

    scores = 5.0 * (separate + 4.6)
    rewards = trainer._rewards_per_func[:, 0]
    mean = rewards.view(-1, 4).mean(1, keepdim=True)
    std = rewards.view(-1, 4).std(1, keepdim=True)
    verifier = ((rewards.view(-1, 4) - mean) / (std + 1e-4)).view(-1)
    expected = mix_advantages(verifier, scores, finished, num_generations=4, coef=0.5, std_threshold=0.0)
    assert torch.allclose(output["advantages"], expected, atol=1e-4)


@pytest.mark.parametrize("temperature, pad_fixture", [(1.0, "tiny_model_dir"), (0.7, "tiny_model_dir_distinct_pad")])
def test_mixing_reads_scores_during_generation(
    tmp_path, prompt_dataset, request, monkeypatch, temperature, pad_fixture
):
    """On-policy micro-batches (no old-log-prob forward): the scores are read while TRL's transformers generation
    samples, including rows whose EOS is the last generated token, and equal those of a separate forward."""
    args = make_args(
        tmp_path,
        self_reward_ref_constant=-4.6,
        self_reward_advantage_coef=0.5,
        temperature=temperature,
        max_completion_length=4,
        per_device_train_batch_size=32,
        generation_kwargs={"sequence_bias": [[[EOS], 3.0]]},
    )
    trainer = LaSeRGRPOTrainer(
        model=request.getfixturevalue(pad_fixture), reward_funcs=parity_reward, args=args, train_dataset=prompt_dataset
    )
    assert not trainer._runs_old_log_prob_forward
    extra_forwards = []
    original = LaSeRGRPOTrainer._self_reward_log_probs
    monkeypatch.setattr(
        LaSeRGRPOTrainer, "_self_reward_log_probs", lambda *a, **k: extra_forwards.append(1) or original(*a, **k)
    )
    generation_batch(trainer)
    assert len(extra_forwards) == 1, "the first batch checks the scores read with one separate forward"
    assert trainer._fast_paths[GENERATION] is True
    extra_forwards.clear()
    torch.manual_seed(0)
    output = generation_batch(trainer)
    assert not extra_forwards, "the scores should be read during generation"
    assert "generate" not in vars(trainer.accelerator.unwrap_model(trainer.model)), "generate must be restored"
    positions, finished = eos_positions(output["completion_ids"], output["completion_mask"], trainer.eos_token_ids)
    assert (finished & (positions == 3)).any(), "some row should end on the last decode step"
    assert (finished & (positions < 3)).any() and (~finished).any()
    with torch.no_grad():
        separate = original(trainer, trainer.model, output, positions, finished)
    assert torch.allclose(trainer._policy_log_probs[finished], separate[finished], atol=1e-4)
    assert torch.isnan(trainer._policy_log_probs[~finished]).all()
