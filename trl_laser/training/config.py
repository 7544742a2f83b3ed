import math
import warnings
from dataclasses import dataclass, field

import torch
from trl import GRPOConfig


@dataclass
class LaSeRConfig(GRPOConfig):
    r"""
    Configuration class for [`LaSeRGRPOTrainer`].

    Inherits every parameter of [`trl.GRPOConfig`] and adds those of LaSeR ("Reinforcement Learning with Last-Token
    Self-Rewarding", https://huggingface.co/papers/2510.14943): the self-reward score
    r_s = β_v · (log π(z_c | x, y) − c_ref) is read at the position right after each completion's EOS and regressed
    onto the verifier reward with a weight α, and can optionally be mixed into the advantages.

    Parameters:
        self_reward_token (`str`, *optional*, defaults to `"auto"`):
            The token z_c, as a token string or id. `"auto"` picks a special token that the chat template and
            generation never use, and logs which one.
        self_reward_coef (`float`, *optional*, defaults to `0.1`):
            α, weight of the alignment (MSE) term. `0` turns LaSeR's loss off.
        self_reward_beta (`float`, *optional*, defaults to `0.1`):
            β_v, the KL coefficient of the verification objective; scales the score.
        self_reward_ref_constant (`float` or `None`, *optional*, defaults to `None`):
            c_ref, the constant replacing log π_ref(z_c | x, y). `None` measures it on the first generation batch
            with the initial model, before any update.
        self_reward_use_ref_model (`bool`, *optional*, defaults to `False`):
            Use the reference model's real log π_ref(z_c | x, y) instead of the constant (needs a reference model:
            `beta > 0`, or a PEFT adapter).
        self_reward_balance (`bool`, *optional*, defaults to `True`):
            Re-weight the alignment term so correct and incorrect completions count equally.
        self_reward_target (`str` or `None`, *optional*, defaults to `None`):
            Name of the reward function whose value is the verifier reward r_v. Required with several functions.
        self_reward_advantage_coef (`float`, *optional*, defaults to `0.0`):
            τ, weight of the self-reward advantage mixed into the verifier advantage (authors: 0.1). `0` is off.
        self_reward_advantage_std_threshold (`float`, *optional*, defaults to `0.1`):
            Group standard deviation of the scores below which a group keeps its verifier advantage.
        reasoning_warmup_steps (`int`, *optional*, defaults to `0`):
            Optimizer steps of plain GRPO before the alignment term starts.
        self_reward_warmup_steps (`int`, *optional*, defaults to `0`):
            Further optimizer steps before the advantage mixing starts.
        self_reward_remeasure_ref_constant (`bool`, *optional*, defaults to `False`):
            Measure c_ref again when the alignment term starts, after `reasoning_warmup_steps` of plain GRPO: on the
            first generation batch of the term, with the policy as it is then, so that every score starts near 0
            whatever the warm-up did to log π(z_c | x, y). `False` keeps the paper's c_ref, measured on the initial
            model (or given).
        self_reward_monitor (`bool`, *optional*, defaults to `False`):
            Read and log the `self_reward/` metrics even when LaSeR changes nothing (`self_reward_coef=0`, no mixing):
            the score an untrained head gives, for a GRPO baseline. Costs one LM-head row per completion; the loss
            and the updates stay exactly GRPO's.
    """

    self_reward_token: str = field(
        default="auto",
        metadata={
            "help": "The self-reward token z_c, as a token string or id. 'auto' picks a special token that the chat "
            "template and generation never use, and logs which one."
        },
    )
    self_reward_coef: float = field(
        default=0.1,
        metadata={"help": "Weight α of the self-reward alignment (MSE) term. 0 turns it off."},
    )
    self_reward_beta: float = field(
        default=0.1,
        metadata={"help": "β_v: the score is β_v · (log π(z_c | x, y) − c_ref)."},
    )
    self_reward_ref_constant: float | None = field(
        default=None,
        metadata={
            "help": "Reference constant c_ref replacing log π_ref(z_c | x, y). None measures it on the first "
            "generation batch with the initial model (before any update), logs it and saves it with the model."
        },
    )
    self_reward_use_ref_model: bool = field(
        default=False,
        metadata={
            "help": "Subtract the reference model's real log π_ref(z_c | x, y) instead of the constant. Needs a "
            "reference model: beta > 0, or a PEFT adapter."
        },
    )
    self_reward_balance: bool = field(
        default=True,
        metadata={"help": "Class-level re-weighting of the alignment term (correct and incorrect count equally)."},
    )
    self_reward_target: str | None = field(
        default=None,
        metadata={
            "help": "Name of the reward function whose value is the verifier reward r_v (in [0, 1]). Optional with "
            "one reward function, required with several."
        },
    )
    self_reward_advantage_coef: float = field(
        default=0.0,
        metadata={
            "help": "τ: weight of the self-reward advantage mixed into the verifier advantage (authors use 0.1). "
            "0 turns the mixing off."
        },
    )
    self_reward_advantage_std_threshold: float = field(
        default=0.1,
        metadata={"help": "Group std of the scores below which a group keeps its verifier advantage."},
    )
    reasoning_warmup_steps: int = field(
        default=0,
        metadata={"help": "Optimizer steps of plain GRPO before the alignment term starts."},
    )
    self_reward_warmup_steps: int = field(
        default=0,
        metadata={
            "help": "Further optimizer steps (after reasoning_warmup_steps) before the advantage mixing starts."
        },
    )
    self_reward_remeasure_ref_constant: bool = field(
        default=False,
        metadata={
            "help": "Measure c_ref again on the first generation batch after reasoning_warmup_steps, with the policy "
            "as it is when the alignment term starts (the warm-up moves log π(z_c | x, y) too). Needs "
            "reasoning_warmup_steps > 0. False keeps the paper's c_ref from the initial model (or the one given)."
        },
    )

    self_reward_monitor: bool = field(
        default=False,
        metadata={
            "help": "Log the self_reward/ metrics even with self_reward_coef=0 and no mixing (a GRPO baseline's "
            "untrained score). The loss and updates stay exactly GRPO's."
        },
    )

    def __post_init__(self):
        # TRL defaults to bf16, which `TrainingArguments` rejects on a machine without a bf16 accelerator; default to
        # float32 there so the same config runs on a laptop CPU and on GPUs. An explicit `bf16` is left alone.
        if self.bf16 is None and not self.fp16 and not torch.cuda.is_available():
            self.bf16 = False
        super().__post_init__()
        if isinstance(self.self_reward_token, str) and self.self_reward_token.lstrip("-").isdigit():
            self.self_reward_token = int(self.self_reward_token)
        checks = [
            (
                self.self_reward_coef >= 0,
                f"self_reward_coef must be >= 0 (0 turns it off), got {self.self_reward_coef}.",
            ),
            (self.self_reward_beta > 0, f"self_reward_beta must be > 0, got {self.self_reward_beta}."),
            (
                0 <= self.self_reward_advantage_coef <= 1,
                f"self_reward_advantage_coef (τ) must be in [0, 1], got {self.self_reward_advantage_coef}.",
            ),
            (
                self.self_reward_advantage_std_threshold >= 0,
                f"self_reward_advantage_std_threshold must be >= 0, got {self.self_reward_advantage_std_threshold}.",
            ),
            (
                self.reasoning_warmup_steps >= 0,
                f"reasoning_warmup_steps must be >= 0, got {self.reasoning_warmup_steps}.",
            ),
            (
                self.self_reward_warmup_steps >= 0,
                f"self_reward_warmup_steps must be >= 0, got {self.self_reward_warmup_steps}.",
            ),
            (
                self.self_reward_ref_constant is None or math.isfinite(self.self_reward_ref_constant),
                f"self_reward_ref_constant must be a finite number (or None to measure it), got "
                f"{self.self_reward_ref_constant}.",
            ),
            (
                self.self_reward_ref_constant is None or self.self_reward_ref_constant <= 0,
                f"self_reward_ref_constant is a log-probability, so it cannot be positive; got "
                f"{self.self_reward_ref_constant}. Pass the mean log π(z_c | x, y) (e.g. -23 for Qwen2.5 with "
                "<|vision_start|>), or None to measure it.",
            ),
            (
                not (self.self_reward_use_ref_model and self.self_reward_ref_constant is not None),
                "self_reward_use_ref_model=True subtracts the reference model's log-prob, so a "
                "self_reward_ref_constant would be ignored. Set one or the other.",
            ),
            (
                not self.self_reward_remeasure_ref_constant or self.reasoning_warmup_steps > 0,
                "self_reward_remeasure_ref_constant=True measures c_ref again when the alignment term starts after "
                "the reasoning warm-up; without one (reasoning_warmup_steps=0) c_ref is already measured on the "
                "initial model. Set reasoning_warmup_steps > 0, or leave it False.",
            ),
            (
                not (self.self_reward_remeasure_ref_constant and self.self_reward_use_ref_model),
                "self_reward_remeasure_ref_constant=True re-measures the constant c_ref, which "
                "self_reward_use_ref_model=True does not use (it subtracts the reference model's log-prob). Set one or "
                "the other.",
            ),
            (
                self.self_reward_advantage_coef == 0 or self.num_generations is None or self.num_generations > 1,
                "Advantage mixing normalises scores within groups; it needs num_generations > 1.",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        if self.self_reward_remeasure_ref_constant:
            # c_ref is measured on a generation batch; one that started during the warm-up would give the term's first
            # steps the old constant, so the warm-up must end where a generation batch begins.
            if not self._starts_generation_batch(self.reasoning_warmup_steps):
                per_batch = self._micro_steps_per_generation / self.gradient_accumulation_steps
                raise ValueError(
                    f"With self_reward_remeasure_ref_constant=True, reasoning_warmup_steps must end where a generation "
                    f"batch begins, every {per_batch:g} optimizer steps here (steps_per_generation x num_iterations / "
                    f"gradient_accumulation_steps); got {self.reasoning_warmup_steps}. Use a multiple of "
                    f"{per_batch:g}."
                )

        self._warn_if_checkpoints_split_generation_batches()

    @property
    def _micro_steps_per_generation(self) -> int:
        """GRPOTrainer generates a new batch every this many micro-steps (`training_step` calls)."""
        return self.steps_per_generation * self.num_iterations

    def _starts_generation_batch(self, optimizer_step: int) -> bool:
        """Whether a generation batch begins at this optimizer step (its micro-step count is a multiple of the
        generation interval)."""
        return (optimizer_step * self.gradient_accumulation_steps) % self._micro_steps_per_generation == 0

    def _warn_if_checkpoints_split_generation_batches(self) -> None:
        """GRPOTrainer generates once per `steps_per_generation x num_iterations` micro-steps and keeps that batch in
        memory, not in checkpoints. A checkpoint saved inside a generation batch therefore resumes by generating a new
        batch there, with the policy of that step, and every later batch starts that many steps off: the resumed run is
        not the one that was interrupted. Warn, naming the save interval that keeps a resume exact."""
        if self.save_strategy != "steps" or self.save_steps < 1:  # a fraction of the run: its steps are unknown here
            return
        if self._starts_generation_batch(int(self.save_steps)):
            return
        micro_steps = self._micro_steps_per_generation
        exact = micro_steps // math.gcd(micro_steps, self.gradient_accumulation_steps)
        warnings.warn(
            f"save_steps={self.save_steps:g} saves checkpoints inside a generation batch (a batch is generated every "
            f"{micro_steps} micro-steps, steps_per_generation x num_iterations, and an optimizer step is "
            f"{self.gradient_accumulation_steps} of them). A run resumed from such a checkpoint generates that batch "
            f"again with a later policy and shifts every later one, so it does not continue exactly. For an exact "
            f"resume, set save_steps to a multiple of {exact}.",
            stacklevel=4,  # the line that built the config
        )

    @property
    def laser_enabled(self) -> bool:
        """Whether LaSeR changes anything compared to GRPO."""
        return self.self_reward_coef > 0 or self.self_reward_advantage_coef > 0

    @property
    def reads_self_reward(self) -> bool:
        """Whether the trainer reads the score (to train on it, mix it, or only to log it)."""
        return self.laser_enabled or self.self_reward_monitor
