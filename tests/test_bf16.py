"""The self-reward score and its gradient under bf16, against float32 on the same batch and the same weights.

Every GPU recipe trains in bf16 (`dtype: bfloat16`, `bf16: true`), and the scorer loads a checkpoint in its own dtype
on a GPU. r_s = β_v · (log π(z_c | x, y) − c_ref) reads a token far in the tail of the distribution: a bf16 logit of
magnitude 16-32 rounds in steps of 0.125, so rounding that one logit can move r_s by β_v · 0.0625. Measured here on a
tiny model whose z_c logit is as far out as on real models (log π(z_c) ≈ −19.5; Qwen2.5: −23):
- a training step (TRL's fused LM head at temperature 1, `untempered_logits` on the EOS hidden states at any other
  temperature) under CPU autocast (`bf16=True`, float32 weights), with bf16 weights (as the recipes load the model),
  and with bf16 weights and TRL's `cast_lm_head_to_fp32=True`;
- `SelfRewardScorer` on the model cast to bf16.
Run with `-s` for a one-line summary of the figures (the README quotes it).
"""

import copy
import itertools

import pytest
import torch
from datasets import Dataset
from torch.nn.functional import cosine_similarity

import trl_laser.training.trainer as trainer_module
from trl_laser import SelfRewardScorer
from trl_laser.core.readout import token_log_probs
from trl_laser.core.recipe import SelfRewardConfig
from trl_laser.testing import EOS_ID, Z_C_ID, log_probs_by_hand, make_trainer, tiny_model, tiny_tokenizer
from trl_laser.training.trainer import FUSED_LM_HEAD


BETA = 0.1  # β_v of the authors and of every recipe
Z_C_LOGIT = -16.0  # mean z_c logit after EOS; the other logits stay near 0, so log π(z_c) ≈ −19.5
BF16_SPACING = 0.125  # distance between neighbouring bf16 numbers in [16, 32)

# Largest |r_s(bf16) − r_s(float32)| on any completion: β_v times half a bf16 spacing (0.00625), what rounding the z_c
# logit alone may cost. Measured: 0.0046 with TRL's fused head (its logit tiles are bf16, under autocast too); with
# bf16 weights, 0.0022 where the head runs in float32 and only the bf16 backbone remains (the readout, the scorer,
# `cast_lm_head_to_fp32`). Before `untempered_logits` projected half-precision heads in float32, the bf16 readout and
# scorer measured 0.0045 (mean 0.0017, 4% of pairs reordered; after: 0.0022, 0.0009, 1%).
SCORE_ATOL = BETA * BF16_SPACING / 2
# Largest mean |r_s(bf16) − r_s(float32)|: β_v times the mean error of one rounding spread evenly over a spacing.
SCORE_MEAN_ATOL = BETA * BF16_SPACING / 4
# The alignment term's gradient, flattened over all parameters and over the LM head alone: smallest cosine with the
# float32 gradient and largest ‖g_bf16 − g_fp32‖ / ‖g_fp32‖, by where r_s sits. At the start of training (r_s ≈ 0, c_ref
# measured on the batch) every completion pulls its score the same way. At the decision threshold (r_s ≈ 0.5) the
# class-balanced pulls of correct and incorrect completions nearly cancel, and the hidden states at EOS differ little
# across completions: the gradient is a small difference of large sums, and bf16's relative error is multiplied by
# that cancellation (measured: cosine 0.988, relative error 0.16 on the LM head with bf16 weights).
GRADIENT_TOLERANCE = {0.0: (0.999, 0.05), 0.5: (0.98, 0.25)}  # r_s ≈ centre -> (min cosine, max relative error)

MODES = {
    "autocast": dict(bf16=True),  # float32 weights; accelerate runs the model's forward under CPU autocast
    "bf16 weights": dict(bf16=True, model_init_kwargs={"dtype": "bfloat16"}),  # as the GPU recipes load the model
    "bf16 weights + fp32 head": dict(bf16=True, model_init_kwargs={"dtype": "bfloat16"}, cast_lm_head_to_fp32=True),
}
FUSED_HEAD, READOUT = 1.0, 0.7  # temperatures: TRL's fused LM head scores z_c at 1, the readout at any other
CASES = [
    ("autocast", FUSED_HEAD),
    ("autocast", READOUT),
    ("bf16 weights", FUSED_HEAD),
    ("bf16 weights", READOUT),
    (
        "bf16 weights + fp32 head",
        FUSED_HEAD,
    ),  # (its readout is the bf16-weights one: the head runs in float32 in both)
]
TRAINING = dict(
    self_reward_coef=1.0,
    self_reward_beta=BETA,
    per_device_train_batch_size=64,
    max_completion_length=8,
    # most completions finish; z_c is never sampled (an unused token on real models)
    generation_kwargs={"sequence_bias": [[[EOS_ID], 3.0], [[Z_C_ID], -100.0]]},
)


pytestmark = pytest.mark.usefixtures("one_thread")


def realistic_tiny_model():
    """The tiny model with log π(z_c) as far out as on a real model: the z_c row of the LM head gets a component along
    the mean hidden state at EOS (z_c logit ≈ `Z_C_LOGIT` there) and one along the direction in which those hidden
    states vary most (so that log π(z_c) spreads over completions). The EOS embedding gets a random row: `tiny_model`
    leaves it at 0 (EOS is the pad token), which would make the hidden state at EOS a function of the context only."""
    tokenizer = tiny_tokenizer()
    model = tiny_model(tokenizer).eval()
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        embeddings = model.model.embed_tokens.weight
        embeddings[EOS_ID] = torch.randn(embeddings.size(1), generator=generator) * model.config.initializer_range
        ids = torch.randint(6, len(tokenizer), (256, 12), generator=generator)
        ids[:, -1] = EOS_ID
        hidden = model.model(input_ids=ids).last_hidden_state[:, -1]
        mean, centred = hidden.mean(0), hidden - hidden.mean(0)
        direction = torch.linalg.svd(centred, full_matrices=False).Vh[0]
        row = model.lm_head.weight[Z_C_ID] + direction / (centred @ direction).std()
        model.lm_head.weight[Z_C_ID] = row + (Z_C_LOGIT - (hidden @ row).mean()) * mean / mean.dot(mean)
    return model, tokenizer


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("realistic_z_c"))
    model, tokenizer = realistic_tiny_model()
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def dataset():
    prompts = [[{"role": "user", "content": f"What is {i} + {i % 3}?"}] for i in range(64)]
    return Dataset.from_dict({"prompt": prompts})


@pytest.fixture(scope="module")
def batch(model_dir, dataset, tmp_path_factory):
    """One generation batch of the float32 trainer, which all runs share, with zero advantages: GRPO's own loss then
    has no gradient, so a training step's gradient is the alignment term's alone. Also returns which completions
    finished and their mean log π(z_c) in float32 (the c_ref the trainer would measure)."""
    trainer = make_trainer(tmp_path_factory.mktemp("generate"), model_dir, dataset, bf16=False, **TRAINING)
    trainer.model.train()
    output = trainer._generate_and_score_completions(next(iter(trainer.get_train_dataloader())))
    with torch.no_grad():
        log_probs, finished = log_probs_by_hand(trainer.model, output)
    targets = output["self_reward_targets"][finished]
    assert finished.sum() >= 40 and 0 < targets.sum() < len(targets), "want many finished completions, both classes"
    assert -21 < log_probs[finished].mean() < -18, "log π(z_c) should be as far out as on real models"
    output["advantages"] = torch.zeros_like(output["advantages"])
    return output, finished, log_probs[finished].mean().item()


@pytest.fixture(scope="module")
def summary():
    """Figures of the tests, printed as one line when the module ends (`pytest -s`)."""
    figures = {"scores": {}, "gradients": {}, "metrics": {}}
    yield figures
    parts = []
    if figures["scores"]:
        parts.append(
            "r_s |Δ| max/mean (pairs reordered): " + ", ".join(f"{k} {v}" for k, v in figures["scores"].items())
        )
    for centre in GRADIENT_TOLERANCE:
        entries = [f"{k[0]} {v}" for k, v in figures["gradients"].items() if k[1] == centre]
        if entries:
            parts.append(f"alignment gradient cos/rel.err all|lm_head at r_s≈{centre:g}: " + ", ".join(entries))
    if figures["metrics"]:
        parts.append("self_reward/ max |Δ|: " + ", ".join(f"{k} {v:.2g}" for k, v in figures["metrics"].items()))
    if parts:
        print(f"\n[bf16 vs float32, β_v={BETA:g}, log π(z_c)≈−19.5] " + "; ".join(parts))


def training_step(tmp_path, model_dir, dataset, batch, c_ref, temperature, **overrides):
    """log π(z_c) the trainer scored, the gradient of every parameter, and the logged `self_reward/` metrics, after
    one micro-batch through `compute_loss` and `accelerator.backward` (what `Trainer.training_step` runs once TRL has
    prepared the micro-batch)."""
    trainer = make_trainer(
        tmp_path, model_dir, dataset, self_reward_ref_constant=c_ref, temperature=temperature, **TRAINING, **overrides
    )
    scored = []
    original = trainer_module.self_reward_score

    def score(log_probs, *args, **kwargs):
        scored.append(log_probs.detach().float())
        return original(log_probs, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trainer_module, "self_reward_score", score)
        trainer.model.train()
        trainer.current_gradient_accumulation_steps = 1
        inputs = {k: v.clone() if torch.is_tensor(v) else copy.deepcopy(v) for k, v in batch[0].items()}
        with trainer.compute_loss_context_manager():
            loss = trainer.compute_loss(trainer.model, inputs)
        trainer.accelerator.backward(loss)
        trainer.log({})
    assert trainer._fast_paths[FUSED_LM_HEAD] is (True if temperature == 1 else None), "the path the case names"
    (log_probs,) = scored
    gradients = {name: p.grad.float() for name, p in trainer.model.named_parameters() if p.grad is not None}
    metrics = {k.split("/")[1]: v for k, v in trainer.state.log_history[-1].items() if k.startswith("self_reward/")}
    return log_probs, gradients, metrics, trainer


def discordant_fraction(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fraction of pairs of rows that `a` and `b` order differently."""
    pairs = list(itertools.combinations(range(len(a)), 2))
    return sum(bool((a[i] - a[j]).sign() != (b[i] - b[j]).sign()) for i, j in pairs) / len(pairs)


def score_figures(scores: torch.Tensor, bf16_scores: torch.Tensor) -> tuple[torch.Tensor, str]:
    errors = (bf16_scores - scores).abs()
    return errors, f"{errors.max():.4f}/{errors.mean():.4f} ({discordant_fraction(scores, bf16_scores):.1%})"


def gradient_figures(reference: dict, measured: dict, names) -> tuple[float, float]:
    a = torch.cat([reference[name].flatten() for name in names])
    b = torch.cat([measured[name].flatten() for name in names])
    return cosine_similarity(a, b, dim=0).item(), ((b - a).norm() / a.norm()).item()


@pytest.mark.parametrize("centre", list(GRADIENT_TOLERANCE))
@pytest.mark.parametrize(
    "mode, temperature", CASES, ids=[f"{m}-{'fused' if t == FUSED_HEAD else 'readout'}" for m, t in CASES]
)
def test_training_step(tmp_path, model_dir, dataset, batch, summary, mode, temperature, centre):
    output, finished, mean_log_prob = batch
    c_ref = mean_log_prob - centre / BETA  # r_s around `centre`
    args = (model_dir, dataset, batch, c_ref, temperature)
    log_probs, gradients, metrics, _ = training_step(tmp_path / "fp32", *args, bf16=False)
    bf16_log_probs, bf16_gradients, bf16_metrics, trainer = training_step(tmp_path / "bf16", *args, **MODES[mode])
    weights_dtype = torch.bfloat16 if "model_init_kwargs" in MODES[mode] else torch.float32
    assert trainer.args.bf16 and trainer.model.model.dtype == weights_dtype

    scores, bf16_scores = BETA * (log_probs[finished] - c_ref), BETA * (bf16_log_probs[finished] - c_ref)
    errors, text = score_figures(scores, bf16_scores)
    case = f"{mode} {'fused head' if temperature == FUSED_HEAD else 'readout'}"
    summary["scores"][case] = text
    head_cosine, head_error = gradient_figures(gradients, bf16_gradients, ["lm_head.weight"])
    cosine, error = gradient_figures(gradients, bf16_gradients, list(gradients))
    summary["gradients"][case, centre] = f"{cosine:.4f}/{error:.3f}|{head_cosine:.4f}/{head_error:.3f}"
    metric_errors = {name: abs(bf16_metrics[name] - value) for name, value in metrics.items()}
    for name, value in metric_errors.items():
        summary["metrics"][name] = max(value, summary["metrics"].get(name, 0.0))

    assert errors.max() <= SCORE_ATOL and errors.mean() <= SCORE_MEAN_ATOL, text
    min_cosine, max_error = GRADIENT_TOLERANCE[centre]
    assert min(cosine, head_cosine) >= min_cosine and max(error, head_error) <= max_error, (cosine, head_cosine)
    # The metrics move with the scores: the class means by at most the largest score error, the loss by at most twice
    # it (|Δ(r_s − r_v)²| ≤ 2 |Δr_s| for |r_s − r_v| ≤ 1, and the class weights average to 1) ...
    assert max(metric_errors["score_correct"], metric_errors["score_incorrect"]) <= errors.max() + 1e-6
    assert metric_errors["loss"] <= 2 * errors.max() + 1e-6
    # ... and the counting ones only through completions that the error lets cross the threshold, or pairs it lets swap
    correct = output["self_reward_targets"][finished] > 0.5
    can_cross = (scores - 0.5).abs() <= errors.max()
    assert metric_errors["acc_correct"] <= can_cross[correct].float().mean() + 1e-6
    assert metric_errors["acc_incorrect"] <= can_cross[~correct].float().mean() + 1e-6
    can_swap = (scores[correct][:, None] - scores[~correct][None, :]).abs() <= 2 * errors.max()
    assert metric_errors["auroc"] <= can_swap.float().mean() + 1e-6


def test_scorer(batch, summary):
    """`SelfRewardScorer` on the model cast to bf16, against float32, on the trainer's finished completions."""
    output, finished, c_ref = batch
    model, tokenizer = realistic_tiny_model()
    config = SelfRewardConfig(token="<reserved_0>", beta=BETA, ref_constant=c_ref)
    sequences = [
        output["prompt_ids"][row][output["prompt_mask"][row].bool()].tolist()
        + output["completion_ids"][row][output["completion_mask"][row].bool()].tolist()
        for row in torch.nonzero(finished).flatten().tolist()
    ]
    scores = {}
    for dtype in (torch.float32, torch.bfloat16):
        scorer = SelfRewardScorer(copy.deepcopy(model).to(dtype), tokenizer, config, confidence=None)
        scores[dtype] = BETA * (torch.tensor(scorer.self_reward_log_probs(sequences, batch_size=16)) - c_ref)
    errors, summary["scores"]["scorer bf16"] = score_figures(scores[torch.float32], scores[torch.bfloat16])
    assert errors.max() <= SCORE_ATOL and errors.mean() <= SCORE_MEAN_ATOL, summary["scores"]["scorer bf16"]


def test_readout_projects_half_precision_heads_in_float32():
    """The readout's logits of a bf16 head are the float32 product of the same bf16 numbers (not rounded to bf16:
    that alone was off by up to 0.013 nats here), and the gradient reaches the hidden states and the head as in
    float32, to bf16 precision."""
    model, _ = realistic_tiny_model()
    model = model.to(torch.bfloat16)
    hidden = (torch.randn(8, model.config.hidden_size) * 2).to(torch.bfloat16).requires_grad_()
    log_probs = token_log_probs(model, hidden, Z_C_ID)
    log_probs.sum().backward()
    hidden32 = hidden.detach().float().requires_grad_()
    weight32 = model.lm_head.weight.detach().float().requires_grad_()
    exact = (hidden32 @ weight32.T).log_softmax(-1)[:, Z_C_ID]
    exact.sum().backward()
    assert log_probs.dtype == torch.float32
    assert torch.allclose(log_probs, exact, atol=1e-5), (log_probs - exact).abs().max()
    for grad, expected in ((hidden.grad, hidden32.grad), (model.lm_head.weight.grad, weight32.grad)):
        assert (grad.float() - expected).norm() <= 2**-6 * expected.norm()
