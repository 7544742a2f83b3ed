import math
import os
import shutil
import textwrap
from contextlib import nullcontext

import torch
import transformers
import trl
from accelerate.logging import get_logger
from accelerate.utils import gather, is_peft_model
from transformers.generation import GenerationMode
from trl import GRPOTrainer
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.utils import get_config_model_id, use_adapter

from ..core.during_generation import generate_with_log_probs
from ..core.model_path import check_model_path
from ..core.readout import capture_hidden_states, eos_positions, token_log_probs
from ..core.recipe import SELF_REWARD_CONFIG_NAME, SelfRewardConfig, load_self_reward_config
from ..core.self_reward import (
    CORRECT_THRESHOLD,
    auroc,
    class_weights,
    metrics_from_counts,
    mix_advantages,
    reference_constant,
    self_reward_score,
    verification_counts,
    weighted_squared_error_sum,
)
from ..core.token import resolve_self_reward_token
from ..tasks.data import BUILTIN_PREFIX
from .config import LaSeRConfig


logger = get_logger(__name__)

# Keys this trainer adds to TRL's generation batch; TRL splits and shuffles them with the rest of the batch.
_POSITIONS, _TARGETS, _WEIGHTS, _REF_LOG_PROBS = (
    "self_reward_positions",
    "self_reward_targets",
    "self_reward_weights",
    "self_reward_ref_log_probs",
)
# Global counts of the generation batch (0-dim tensors: TRL passes them to every micro-batch unchanged).
_NUM_VALID, _NUM_CORRECT, _NUM_INCORRECT = (
    "self_reward_num_valid",
    "self_reward_num_correct",
    "self_reward_num_incorrect",
)

# The TRL releases the test suite has passed against (as in pyproject.toml); named in the fast-path warning.
TESTED_TRL = "trl>=1.16,<1.17"

# Speed-ups that read log π(z_c) through TRL / transformers internals, and what the plain path that replaces each one
# costs. The plain paths (a hook on the model's backbone, in the loss forward or in one extra no-grad forward) are
# right whatever TRL does; a fast path is checked against its plain path the first time it runs (`_check_fast_path`)
# and is switched off for the run if they disagree.
FUSED_LM_HEAD = "TRL's fused LM head"  # z_c as an extra label of the loss forward's fused head
OLD_LOG_PROB_FORWARD = "TRL's old-log-prob forward"  # EOS hidden states captured in TRL's no-grad forward
GENERATION = "transformers generation"  # read while `model.generate` samples (`generate_with_log_probs`)
_PLAIN_PATH_COST = {
    FUSED_LM_HEAD: "the EOS hidden states are projected separately, with one more transient vocab x hidden gradient "
    "buffer per micro-batch",
    OLD_LOG_PROB_FORWARD: "one extra no-grad forward per generation batch that needs the scores",
    GENERATION: "one extra no-grad forward per generation batch that needs the scores",
}

# Largest |fast − plain| on log π(z_c), in nats, that passes the check. Both paths compute the same number from the same
# weights; they differ by rounding only, because their forwards run different shapes (a cached decode step or TRL's
# whole-batch forward vs a forward cut after the last EOS; TRL's tiled fused head vs one LM-head row). Measured on
# SmolLM2-135M (30 layers): at most 2e-5 in float32 and 0.37 in bf16 (8 significant bits: logits of magnitude 16-32
# round in steps of 0.125). A path that reads nothing, NaN, another batch's rows or a tempered distribution is off by
# more; in float32 the check also catches a read at another position or row of the same batch whenever log π(z_c)
# varies by more than the tolerance across them. Within it, r_s moves by at most β_v times the tolerance.
FAST_PATH_ATOL = 1e-3  # float32
FAST_PATH_ATOL_HALF_PRECISION = 1.0  # bf16 / fp16 weights or autocast


class LaSeRGRPOTrainer(GRPOTrainer):
    """
    Trainer for LaSeR: Reinforcement Learning with Last-Token Self-Rewarding.

    LaSeR (https://huggingface.co/papers/2510.14943) trains the policy to also judge its own completions. The judgement
    is the self-reward score r_s = β_v · (log π_θ(z_c | x, y) − c_ref), read from the next-token distribution right
    after the completion's EOS for a pre-chosen token z_c. Training regresses r_s onto the verifier reward r_v with an
    MSE term added to the GRPO loss (paper Eq. 10):

        L = L_GRPO + α · Σ_i w_i (r_s,i − r_v,i)² / N

    over the N finished, rewarded completions of the generation batch, with class weights w_i (see
    [`trl_laser.core.self_reward.class_weights`]). log π_θ(z_c | x, y) comes from the same forward pass as the policy
    loss: z_c is the label of the position after each EOS, scored by TRL's fused LM head with the completion tokens.
    No second pass, one extra position per completion. Optionally, the scores are mixed into the advantages (paper
    §4.2, [`trl_laser.core.self_reward.mix_advantages`]).

    The changes w.r.t. [`trl.GRPOTrainer`]:
    - `_generate_and_score_completions`: adds the EOS position, verifier target and class weight of each completion
      to the batch, measures c_ref on the first batch, and (when enabled) mixes the advantages.
    - `_calculate_rewards`: keeps the per-function rewards so the verifier target can be read.
    - `_compute_loss`: adds the alignment term and accumulates the `self_reward/` statistics of the logging window.
    - `log`: turns the window's sums into the `self_reward/` metrics (fractions of counts, F1, AUROC).
    - `save_model` / `_load_optimizer_and_scheduler`: save the scoring metadata with the model and restore c_ref
      (a model trained with LaSeR before keeps its saved c_ref when training goes on).
    - `_get_per_token_logps_and_entropies`: in the loss forward, also scores z_c after each EOS (Eq. 8); in TRL's
      old-log-prob forward, reads the generating policy's scores (for c_ref and advantage mixing, §4.2).
    - `_generate_single_turn`: reads those scores during transformers generation when no old-log-prob forward runs.
    - `_push_from_checkpoint` / `create_model_card`: every pushed revision carries the scoring recipe and a card that
      says how to score with the model.

    Fast paths. Two plain paths read log π(z_c) correctly whatever TRL does: a hook on the backbone of the loss forward
    (the EOS hidden states projected apart, untempered) and one extra no-grad forward over the generation batch. Three
    speed-ups replace them where they apply: (1) z_c as an extra label of TRL's fused LM head in the loss forward
    (temperature 1, alignment term active); (2) the EOS hidden states of TRL's own old-log-prob forward; (3) the read
    during transformers generation (`generate_with_log_probs`; sampling or greedy search, one sequence per prompt, see
    `_generation_read_applies`). The first time each one runs, it is compared with its plain path on the same rows
    (`_check_fast_path`); beyond `FAST_PATH_ATOL` (`FAST_PATH_ATOL_HALF_PRECISION` in bf16 / fp16) a warning names the
    path and the installed TRL and transformers, and the run continues on the plain path. A TRL change can cost
    speed, not correctness.

    Private TRL / transformers APIs used (tested with TRL 1.16), what breaks if one changes, and what catches it:
    - `GRPOTrainer._generate_and_score_completions` (overridden): its output keys (`prompt_ids`, `completion_ids`,
      their masks, `advantages`) and TRL carrying the extra per-row keys to `_compute_loss`, split and shuffled with
      the batch. A change raises a KeyError or misaligns rows: caught by the oracle tests (tests/test_laser_trainer.py).
    - `GRPOTrainer._calculate_rewards` (overridden): the rewards of all processes, one column per function, NaN where
      a function returned None. A change reads the wrong verifier target: `_check_targets` (values in [0, 1]) and
      `test_several_reward_functions_with_weights`.
    - `GRPOTrainer._compute_loss` (overridden): wrapped, not copied. If TRL stops calling it, no alignment term is
      added: `test_alignment_term_value_and_gradient` and the other term tests.
    - `GRPOTrainer._get_per_token_logps_and_entropies` (overridden): its signature and return value (log-probs,
      entropies, aux loss), and the fused LM head it calls (`model(..., labels=..., fused_lm_head=True)` scoring the
      positions whose label is set). Fast paths (1) and (2): the check, and
      `test_loss_forward_scores_z_c_without_changing_grpo_log_probs` for GRPO's own log-probs.
    - `GRPOTrainer._generate_single_turn` (overridden): calls `generate(input_ids=..., attention_mask=...,
      generation_config=...)` on the unwrapped model with left-padded prompts. Fast path (3): the check (a read of
      nothing or of other rows).
    - The condition and order of TRL's no-grad forwards in `_generate_and_score_completions`: copied in
      `_runs_old_log_prob_forward`, which assumes the old-log-prob forward is the first no-grad forward of the policy
      (before the PEFT reference forward, the same module). Fast path (2): the check (nothing captured, or another
      forward's values).
    - transformers `generate` internals used by `generate_with_log_probs`: a logits processor is called once per
      decode step with every id so far, the backbone's last position is the token just fed, and the output carries
      `past_key_values`. Fast path (3): the check.
    - `GRPOTrainer` attributes: `_metrics`, `_tokenizer`, `_is_vlm`, `eos_token_ids`, `generation_config`, `use_vllm`,
      `use_transformers_continuous_batching`, `vllm_importance_sampling_correction`, `num_iterations`, `temperature`,
      `num_generations`, `scale_rewards`, `reward_func_names`, `ref_model`. A rename raises an AttributeError; a
      change of meaning in the ones that pick a fast path is caught by the check.
    - `trl.models.utils.disable_gradient_checkpointing`, `trl.trainer.utils.get_config_model_id` and `use_adapter`:
      an ImportError when this module is imported.
    - `transformers.Trainer._load_optimizer_and_scheduler` (overridden): called with the checkpoint on resume. If it is
      not, c_ref is measured again on the trained model: `test_resume_restores_the_reference_constant`.
    - `transformers.Trainer._push_from_checkpoint` (overridden): mid-run pushes would lack the scoring recipe:
      `test_every_pushed_revision_carries_the_scoring_recipe`.
    - `transformers.Trainer.current_gradient_accumulation_steps`: the term's normalisation across micro-batches:
      tests/test_scale.py and `test_term_does_not_depend_on_micro_batch_split`.
    Everything else (generation, rewards, KL, loss types, logging, vLLM, distributed training) is inherited unchanged.
    """

    _tag_names = ["trl", "grpo", "laser"]
    _name = "LaSeR"
    _paper = {
        "title": "LaSeR: Reinforcement Learning with Last-Token Self-Rewarding",
        "id": "2510.14943",
        # docstyle-ignore
        "citation": textwrap.dedent("""\
            @inproceedings{yang2026laser,
                title        = {{LaSeR: Reinforcement Learning with Last-Token Self-Rewarding}},
                author       = {Wenkai Yang and Weijie Liu and Ruobing Xie and Yiju Guo and Lulu Wu and Saiyong Yang and Yankai Lin},
                year         = 2026,
                booktitle    = {International Conference on Learning Representations (ICLR)},
                eprint       = {arXiv:2510.14943},
            }"""),
    }

    def __init__(self, model, reward_funcs=None, args: LaSeRConfig | None = None, **kwargs):
        if args is None:
            model_name = model if isinstance(model, str) else get_config_model_id(model.config)
            args = LaSeRConfig(f"{model_name.split('/')[-1]}-LaSeR")
        elif not isinstance(args, LaSeRConfig):
            raise TypeError(
                f"LaSeRGRPOTrainer needs a LaSeRConfig, got {type(args).__name__}. Build the arguments with "
                "`LaSeRConfig(...)` (it accepts every GRPOConfig field)."
            )
        self._check_supported(model, reward_funcs, args, kwargs)
        super().__init__(model, reward_funcs, args=args, **kwargs)
        if args.reads_self_reward and self._is_vlm:
            raise NotImplementedError(
                "LaSeRGRPOTrainer does not support vision-language models yet: the extra forward passes that measure "
                "c_ref and mix advantages do not pass image inputs. Use a text-only model, or GRPOTrainer."
            )

        self._target_index = self._resolve_target_index()
        self.self_reward_token, self.self_reward_token_id = resolve_self_reward_token(
            self._tokenizer,
            self.accelerator.unwrap_model(self.model),
            args.self_reward_token,
            eos_token_ids=self.eos_token_ids,
        )
        self.ref_constant = args.self_reward_ref_constant
        self.ref_constant_std = None
        self._rewards_per_func = None
        self._capture_policy_log_probs = self._read_log_probs_during_generation = False
        self._policy_log_probs = None
        self._score_request = None  # (EOS positions, finished) of the micro-batch whose loss forward reads z_c
        self._loss_forward_log_probs = None
        # Fast path -> None until checked against the plain path, then whether it agreed (False: off for the run)
        self._fast_paths = dict.fromkeys((FUSED_LM_HEAD, OLD_LOG_PROB_FORWARD, GENERATION))
        self._self_reward_window = {}  # mode -> sums and scores of the completions seen since the last log
        self._ref_constant_remeasure_pending = args.self_reward_remeasure_ref_constant and args.reads_self_reward
        if self.ref_constant is None and args.reads_self_reward:
            self._adopt_saved_ref_constant(get_config_model_id(self.accelerator.unwrap_model(self.model).config))

    # ------------------------------------------------------------------------------------------------------------
    # Validation (before the model is loaded, where possible)

    @staticmethod
    def _check_supported(model, reward_funcs, args: LaSeRConfig, kwargs: dict):
        for feature in ("tools", "rollout_func", "environment_factory"):
            if kwargs.get(feature) is not None:
                raise NotImplementedError(
                    f"LaSeRGRPOTrainer does not support `{feature}` yet: multi-turn completions interleave tool or "
                    "environment output, and the self-reward position after the model's own EOS is not defined there. "
                    "Use GRPOTrainer for that run, or single-turn completions."
                )
        if isinstance(model, str):
            check_model_path(model)  # a mistyped local directory is not sent to the Hub as a repository id
        if not args.reads_self_reward:
            return
        is_peft = kwargs.get("peft_config") is not None or (not isinstance(model, str) and is_peft_model(model))
        if args.self_reward_use_ref_model and args.beta == 0.0 and not is_peft:
            raise ValueError(
                "self_reward_use_ref_model=True needs a reference model, and TRL loads one only when beta > 0 (or "
                "uses the base model under a PEFT adapter). Set beta > 0, pass a peft_config, or use the constant "
                "(self_reward_use_ref_model=False; the paper finds no difference)."
            )

    def _resolve_target_index(self) -> int:
        # Runs after GRPOTrainer's own argument validation, so that TRL's messages (e.g. about `reward_weights`)
        # reach the user unchanged.
        names = list(self.reward_func_names)
        target = self.args.self_reward_target
        if target is None and len(names) > 1 and self.args.reads_self_reward:
            raise ValueError(
                f"With {len(names)} reward functions, LaSeR needs to know which one is the verifier reward r_v: set "
                f"`self_reward_target` to its name (one of {names})."
            )
        if target is None:
            return 0
        if target not in names:
            raise ValueError(f"self_reward_target={target!r} is not one of the reward functions: {names}.")
        return names.index(target)

    def _adopt_saved_ref_constant(
        self, directory: str | None, resuming: bool = False, override_arguments: bool = False
    ):
        """Keep the c_ref a LaSeR model was trained with (its recipe in `directory`): measuring it again on the trained
        model would shift every score (the trained model puts much more mass on z_c). A recipe for another token is
        an error when `resuming` a checkpoint (the run would change its token midway); when training a LaSeR model
        further, c_ref is measured for the new token instead. A c_ref given in the arguments wins, unless
        `override_arguments` (a checkpoint whose c_ref was re-measured when the alignment term started)."""
        if not directory or not os.path.isfile(os.path.join(directory, SELF_REWARD_CONFIG_NAME)):
            return
        saved = load_self_reward_config(directory)
        if saved.token_id != self.self_reward_token_id:
            if resuming:
                raise ValueError(
                    f"The checkpoint {directory} was trained with self-reward token {saved.token!r} (id "
                    f"{saved.token_id}), but this run resolved {self.self_reward_token!r} (id "
                    f"{self.self_reward_token_id}). Resume with `self_reward_token={saved.token_id}`."
                )
            logger.warning(
                f"{directory} was trained with self-reward token {saved.token!r}, this run uses "
                f"{self.self_reward_token!r}: c_ref will be measured for the new token."
            )
            return
        if self.args.self_reward_ref_constant is None or override_arguments:
            self.ref_constant, self.ref_constant_std = saved.ref_constant, saved.ref_constant_std
            logger.info(f"Using c_ref = {self.ref_constant:.3f} saved with {directory}.")

    # ------------------------------------------------------------------------------------------------------------
    # Schedule

    @property
    def _alignment_active(self) -> bool:
        return self.args.self_reward_coef > 0 and self.state.global_step >= self.args.reasoning_warmup_steps

    def _mixing_active(self, mode: str) -> bool:
        start = self.args.reasoning_warmup_steps + self.args.self_reward_warmup_steps
        return mode == "train" and self.args.self_reward_advantage_coef > 0 and self.state.global_step >= start

    # ------------------------------------------------------------------------------------------------------------
    # Generation batch

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        # Kept so that `_generate_and_score_completions` can read the verifier reward; gathered over all processes.
        self._rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        return self._rewards_per_func

    @torch.no_grad()
    def _self_reward_log_probs(self, model, output, positions, finished, reference: bool = False) -> torch.Tensor:
        """log π(z_c | x, y) for every row of a generation batch, from one no-grad forward of `model`.

        The forward goes through the model's own head with `logits_to_keep=1` (one position of logits per row); the
        hidden state at each EOS is taken by the capture hook and projected alone, untempered. Columns after the last
        EOS of the batch are cut (causal attention: they cannot change what comes before), which spares the padding
        and the tails of truncated completions, whose scores are not used. Every process still runs the same number
        of forwards, as sharded models (FSDP, ZeRO-3) require.
        """
        prompt_width = output["prompt_ids"].size(1)
        width = prompt_width + (int(positions[finished].max()) + 1 if finished.any() else 1)
        input_ids = torch.cat([output["prompt_ids"], output["completion_ids"]], dim=1)[:, :width]
        attention_mask = torch.cat([output["prompt_mask"], output["completion_mask"]], dim=1)[:, :width]
        absolute = prompt_width + positions
        batch_size = (
            self.args.per_device_train_batch_size if self.model.training else self.args.per_device_eval_batch_size
        )
        unwrapped = self.accelerator.unwrap_model(self.model)
        if reference and self.ref_model is None:
            # PEFT: the reference is the base model, i.e. the policy with its adapter disabled (as in TRL)
            adapter = use_adapter(unwrapped, adapter_name="ref" if "ref" in unwrapped.peft_config else None)
        else:
            adapter = nullcontext()
        with (
            adapter,
            disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs),
            capture_hidden_states(model, absolute) as capture,
        ):
            for start in range(0, input_ids.size(0), batch_size):
                end = start + batch_size
                with self.accelerator.autocast():
                    model(input_ids=input_ids[start:end], attention_mask=attention_mask[start:end], logits_to_keep=1)
            return token_log_probs(model, capture.hidden_states(), self.self_reward_token_id)

    # ------------------------------------------------------------------------------------------------------------
    # Fast paths: checked once against the plain path, switched off for the run if they disagree

    @property
    def _generation_read_applies(self) -> bool:
        """Whether `generate_with_log_probs` can read the scores while this run's transformers generation samples. It
        assumes one output row per input row, in order, and one decode step per generated token whose input is the
        token fed last: true of sampling and greedy search with one sequence per prompt (TRL left-pads the prompts,
        as it also assumes), not of beam search (rows are expanded and reordered), contrastive search, assisted
        generation or DoLa. vLLM and continuous batching have no decode step to hook into."""
        if self.use_vllm or self.use_transformers_continuous_batching:
            return False
        config = self.generation_config
        return (
            config.get_generation_mode() in (GenerationMode.SAMPLE, GenerationMode.GREEDY_SEARCH)
            and (config.num_return_sequences or 1) == 1
        )

    @property
    def _fast_path_atol(self) -> float:
        # Half precision when the weights are, or when autocast computes in it (`bf16` / `fp16` arguments)
        half = self.args.bf16 or self.args.fp16
        half = half or self.accelerator.unwrap_model(self.model).dtype in (torch.bfloat16, torch.float16)
        return FAST_PATH_ATOL_HALF_PRECISION if half else FAST_PATH_ATOL

    def _check_fast_path(self, path: str, fast: torch.Tensor | None, plain: torch.Tensor, finished: torch.Tensor):
        """Compare log π(z_c) read by a fast path with the plain path's on the finished rows of the same batch, and
        keep the fast path for the rest of the run only if they agree (`FAST_PATH_ATOL`). A fast path that read
        nothing, or another number of rows, disagrees. All processes take the same decision (they must keep running
        the same forwards); a batch with no finished completion leaves the path unchecked. Returns the decision."""
        if fast is None or fast.shape != plain.shape:
            error = plain.new_full((), math.inf)
        else:
            gaps = (fast.detach().float() - plain.detach().float()).abs().nan_to_num(nan=math.inf)
            error = gaps[finished].max() if finished.any() else gaps.new_zeros(())
        counts = torch.stack([error.float(), finished.sum().float().to(error.device)])
        stats = gather(counts.to(self.accelerator.device)).view(-1, 2)
        error, num_finished = stats[:, 0].max().item(), stats[:, 1].sum().item()
        if num_finished == 0 and math.isfinite(error):
            return True
        atol = self._fast_path_atol
        agrees = self._fast_paths[path] = error <= atol
        if not agrees:
            gap = f"off by {error:.3g}" if math.isfinite(error) else "it read nothing, NaN or another number of rows"
            logger.warning(
                f"LaSeR's fast read of log π(z_c) in {path} disagrees with the plain read ({gap}; tolerance {atol:g}) "
                f"under trl {trl.__version__} and transformers {transformers.__version__}. This fast path relies on "
                f"TRL and transformers internals and was tested with {TESTED_TRL}. Training goes on with the plain read, whose scores "
                f"are exact, at a cost: {_PLAIN_PATH_COST[path]}. To get the fast path back, install a tested TRL "
                f'(`pip install "{TESTED_TRL}"`).'
            )
        return agrees

    @property
    def _runs_old_log_prob_forward(self) -> bool:
        """Whether TRL's `_generate_and_score_completions` runs a no-grad forward of the policy for the old log-probs
        (its condition, in TRL 1.16). That forward comes before the reference model's (the PEFT reference is the same
        module with its adapter off), so the first no-grad forward of the policy is the one to read. Both assumptions
        are checked on the first batch that relies on them (`_check_fast_path`)."""
        generate_every = self.args.steps_per_generation * self.num_iterations
        return self.args.gradient_accumulation_steps % generate_every != 0 or (
            self.use_vllm and self.vllm_importance_sampling_correction
        )

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, *args, **kwargs):
        request, self._score_request = self._score_request, None  # set by `_compute_loss` for its one policy forward
        if request is not None:
            return self._logps_with_self_reward(
                model, input_ids, attention_mask, logits_to_keep, request, *args, **kwargs
            )
        # When TRL runs its own no-grad forward of the policy over the generation batch (old log-probs: off-policy
        # micro-batches, vLLM importance sampling), the EOS hidden states of that very forward give the scores for
        # free: the capture hook keeps one row per completion, projected alone onto z_c.
        if not self._capture_policy_log_probs or model is not self.model or torch.is_grad_enabled():
            return super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, *args, **kwargs
            )
        self._capture_policy_log_probs = False  # one forward per generation batch
        positions, _ = eos_positions(
            input_ids[:, -logits_to_keep:], attention_mask[:, -logits_to_keep:], self.eos_token_ids
        )
        with capture_hidden_states(model, input_ids.size(1) - logits_to_keep + positions) as capture:
            result = super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, *args, **kwargs
            )
        self._policy_log_probs = token_log_probs(model, capture.hidden_states(), self.self_reward_token_id)
        return result

    def _logps_with_self_reward(self, model, input_ids, attention_mask, logits_to_keep, request, *args, **kwargs):
        """TRL's per-token log-probs of the completions and, from the same forward and the same fused LM head,
        log π_θ(z_c | x, y) of every finished completion (paper Eq. 8), left in `self._loss_forward_log_probs`.

        z_c is placed as the label of the slot right after each EOS (an extra column for rows whose EOS is the last
        one). Causal attention keeps every earlier position unchanged, and the slot is outside the completion mask;
        its log-prob and entropy are set back to the 0 GRPO has there, so the policy loss is GRPO's. The z_c rows join
        TRL's chunked LM-head projection, whose backward builds the head's gradient once for all rows: projecting the
        EOS hidden states separately would add a second, transient vocab × hidden gradient buffer.
        """
        positions, finished = request
        batch_size, width = input_ids.shape
        rows = torch.arange(batch_size, device=input_ids.device)
        slots = positions + 1  # within the completion columns, widened by one
        slot_columns = width - logits_to_keep + slots
        input_ids = torch.cat([input_ids, input_ids.new_zeros(batch_size, 1)], dim=1)
        attention_mask = torch.cat([attention_mask, attention_mask.new_zeros(batch_size, 1)], dim=1)
        input_ids[rows[finished], slot_columns[finished]] = self.self_reward_token_id
        attention_mask[rows[finished], slot_columns[finished]] = 1
        logps, entropies, aux_loss = super()._get_per_token_logps_and_entropies(
            model, input_ids, attention_mask, logits_to_keep + 1, *args, **kwargs
        )
        self._loss_forward_log_probs = torch.where(finished, logps[rows, slots], 0.0)
        at_slot = torch.zeros_like(logps, dtype=torch.bool)
        at_slot[rows[finished], slots[finished]] = True
        logps = logps.masked_fill(at_slot, 0.0)[:, :-1]
        if entropies is not None:
            entropies = entropies.masked_fill(at_slot, 0.0)[:, :-1]
        return logps, entropies, aux_loss

    def _generate_single_turn(self, prompt_ids, *args, **kwargs):
        # With transformers generation and no old-log-prob forward, the scores are read while sampling: the decode
        # step whose input is a row's EOS computes its next-token distribution anyway (one LM-head row per row; a
        # row that ends on the last step takes one more decode step on the cache).
        if not self._read_log_probs_during_generation:
            return super()._generate_single_turn(prompt_ids, *args, **kwargs)
        model = self.accelerator.unwrap_model(self.model)
        original, read = model.generate, {}

        def generate(input_ids, attention_mask, **generate_kwargs):
            sequences, read["log_probs"] = generate_with_log_probs(
                model, self.self_reward_token_id, self.eos_token_ids, input_ids, attention_mask, original,
                **generate_kwargs,
            )  # fmt: skip
            return sequences

        shadowed = model.__dict__.get("generate")
        model.generate = generate  # TRL calls `unwrapped_model.generate(...)` on this very module
        try:
            result = super()._generate_single_turn(prompt_ids, *args, **kwargs)
        finally:
            if shadowed is None:
                del model.generate
            else:
                model.generate = shadowed
        self._policy_log_probs = read.get("log_probs")
        return result

    def _generate_and_score_completions(self, inputs):
        mode = "train" if self.model.training else "eval"
        # Scores of the generation batch under the policy that generated it are needed (1) once, to measure c_ref
        # with the initial model, and (2) for advantage mixing, which must know every score of a group before the
        # first loss is computed. Read them from TRL's old-log-prob forward when it runs one.
        # (3) `self_reward_remeasure_ref_constant`: once more, on the first batch of the alignment term.
        remeasure = mode == "train" and self._ref_constant_remeasure_pending and self._alignment_active
        needs_scores = self.args.reads_self_reward and (
            self.ref_constant is None or remeasure or self._mixing_active(mode)
        )
        self._capture_policy_log_probs = (
            needs_scores and self._fast_paths[OLD_LOG_PROB_FORWARD] is not False and self._runs_old_log_prob_forward
        )
        self._read_log_probs_during_generation = (
            needs_scores
            and not self._capture_policy_log_probs
            and self._fast_paths[GENERATION] is not False
            and self._generation_read_applies
        )
        fast_path = (
            OLD_LOG_PROB_FORWARD
            if self._capture_policy_log_probs
            else GENERATION
            if self._read_log_probs_during_generation
            else None
        )
        self._policy_log_probs = None
        try:
            output = super()._generate_and_score_completions(inputs)
        finally:
            self._capture_policy_log_probs = self._read_log_probs_during_generation = False
        if not self.args.reads_self_reward:
            return output
        num_local = output["completion_ids"].size(0)
        process_slice = slice(
            self.accelerator.process_index * num_local, (self.accelerator.process_index + 1) * num_local
        )

        positions, finished = eos_positions(output["completion_ids"], output["completion_mask"], self.eos_token_ids)
        targets = self._rewards_per_func[:, self._target_index]  # all processes
        all_finished = gather(finished)
        valid = all_finished & ~torch.isnan(targets)
        self._check_targets(targets[valid])
        weights = class_weights(targets, valid, balance=self.args.self_reward_balance)
        correct = valid & (targets > CORRECT_THRESHOLD)

        output[_POSITIONS] = positions
        output[_TARGETS] = targets[process_slice]
        output[_WEIGHTS] = weights[process_slice]
        output[_NUM_VALID] = valid.sum().float()
        output[_NUM_CORRECT] = correct.sum().float()
        output[_NUM_INCORRECT] = (valid & ~correct).sum().float()

        if self.args.self_reward_use_ref_model:
            reference = self.ref_model if self.ref_model is not None else self.model
            ref_log_probs = self._self_reward_log_probs(reference, output, positions, finished, reference=True)
            output[_REF_LOG_PROBS] = torch.where(finished, ref_log_probs, torch.nan)
            if self.ref_constant is None:
                self._set_ref_constant(ref_log_probs, finished)

        needs_ref_constant = self.ref_constant is None or remeasure
        if needs_scores:
            log_probs = self._generating_policy_log_probs(output, positions, finished, fast_path)
            if needs_ref_constant and self._set_ref_constant(log_probs, finished, remeasure=remeasure):
                self._ref_constant_remeasure_pending &= not remeasure
            if self._mixing_active(mode) and self.ref_constant is not None:
                reference = output.get(_REF_LOG_PROBS, self.ref_constant)
                scores = self_reward_score(log_probs, self.args.self_reward_beta, reference)
                unscorable = torch.isnan(self._rewards_per_func).all(dim=1)
                self._mix_advantages(output, gather(scores), all_finished, unscorable, process_slice)

        self._metrics[mode]["self_reward/finished_fraction"].append(all_finished.float().mean().item())
        self._metrics[mode]["self_reward/num_correct"].append(output[_NUM_CORRECT].item())
        self._metrics[mode]["self_reward/num_incorrect"].append(output[_NUM_INCORRECT].item())
        # Averaged over a logging window: the share of its generation batches (those with a finished, rewarded
        # completion) that held one class only, where the term sees right or wrong answers alone.
        if output[_NUM_VALID].item() > 0:
            one_class = min(output[_NUM_CORRECT].item(), output[_NUM_INCORRECT].item()) == 0
            self._metrics[mode]["self_reward/one_class_batches"].append(float(one_class))
        if self.ref_constant is not None:
            self._metrics[mode]["self_reward/ref_constant"].append(self.ref_constant)
        return output

    def _generating_policy_log_probs(self, output, positions, finished, fast_path: str | None) -> torch.Tensor:
        """log π(z_c | x, y) of the generation batch under the policy that generated it: as read by `fast_path` while
        TRL ran (checked against the plain path the first time), or from one extra no-grad forward over the batch,
        cut after its last EOS. The extra forward is the only way with vLLM generation and no old-log-prob forward:
        vLLM returns no hidden states, and its log-probs are those of sampled tokens, not of z_c. Runs without
        mixing pay for it on the first batch only."""
        read = self._policy_log_probs
        if fast_path is not None and self._fast_paths[fast_path] and read is not None:
            return read
        plain = self._self_reward_log_probs(self.model, output, positions, finished)
        if fast_path is not None and self._fast_paths[fast_path] is None:
            self._check_fast_path(fast_path, read, plain, finished)
        return plain

    def _check_targets(self, targets: torch.Tensor):
        if targets.numel() and (targets.min() < 0 or targets.max() > 1):
            name = self.reward_func_names[self._target_index]
            raise ValueError(
                f"The verifier reward '{name}' returned values in [{targets.min().item():g}, {targets.max().item():g}]; "
                "LaSeR regresses the self-reward score onto it, so it must lie in [0, 1] (1 = correct). Rescale the "
                "function or choose another `self_reward_target`."
            )

    def _set_ref_constant(self, log_probs: torch.Tensor, finished: torch.Tensor, remeasure: bool = False) -> bool:
        """Set c_ref to the mean of the finished rows' log π(z_c | x, y); False when no row finished (the next batch
        measures it)."""
        values = gather(torch.where(finished, log_probs, torch.nan))
        values = values[~torch.isnan(values)]
        if values.numel() == 0:
            return False
        if self.state.global_step > 0 and not remeasure:
            logger.warning(
                f"c_ref is measured at step {self.state.global_step}, after updates: no earlier generation batch had a "
                "finished completion. Set `self_reward_ref_constant` to control it."
            )
        previous = self.ref_constant
        self.ref_constant, self.ref_constant_std = reference_constant(values.tolist())
        what = (
            f"Re-measured c_ref as the alignment term starts (step {self.state.global_step}; before: {previous:.3f}):"
            if remeasure and previous is not None
            else "Measured the self-reward reference constant"
        )
        logger.info(
            f"{what} c_ref = {self.ref_constant:.3f} ± {self.ref_constant_std:.3f} (log π({self.self_reward_token!r} | "
            f"x, y) over {values.numel()} completions); it is saved with the model."
        )
        return True

    def _mix_advantages(self, output, scores, finished, unscorable, process_slice):
        verifier_advantages = gather(output["advantages"])
        mixed = mix_advantages(
            verifier_advantages,
            scores,
            finished,
            num_generations=self.num_generations,
            coef=self.args.self_reward_advantage_coef,
            std_threshold=self.args.self_reward_advantage_std_threshold,
            scale=self.scale_rewards,
        )
        # TRL gives rows that no reward function scored a zero advantage; mixing must not give them one back.
        output["advantages"] = mixed.masked_fill(unscorable, 0.0)[process_slice]

    # ------------------------------------------------------------------------------------------------------------
    # Loss

    def _compute_loss(self, model, inputs):
        if not self.args.reads_self_reward or self.ref_constant is None and not self.args.self_reward_use_ref_model:
            return super()._compute_loss(model, inputs)
        result = None
        if self.temperature == 1.0 and self._alignment_active and self._fast_paths[FUSED_LM_HEAD] is not False:
            # log π(z_c) comes out of the policy forward itself, through TRL's fused LM head. (A run that only
            # monitors the score keeps GRPO's forward bit for bit: it needs no gradient through the score.)
            result = self._loss_with_fused_head_scores(model, inputs)
        if result is None:
            # The plain path, at any other temperature (TRL's fused head divides by it, while r_s is defined at
            # temperature 1), while only monitoring, and when the fused path failed its check: project the EOS hidden
            # states of the same forward separately (a hook captures them). Memory: log π(z_c) =
            # logit_zc − logsumexp(logits) couples every vocabulary row, so this projection's gradient w.r.t. the head
            # is one more transient vocab x hidden buffer beyond GRPO's (`benchmarks/train_overhead.py --temperature
            # 0.7` measures it).
            with self._capture_eos_states(model, inputs) as capture:
                loss = super()._compute_loss(model, inputs)
            result = loss, token_log_probs(model, capture.hidden_states(), self.self_reward_token_id)
        loss, log_probs = result
        reference = inputs[_REF_LOG_PROBS] if self.args.self_reward_use_ref_model else self.ref_constant
        scores = self_reward_score(log_probs, self.args.self_reward_beta, reference)
        targets, weights = inputs[_TARGETS], inputs[_WEIGHTS]

        mode = "train" if self.model.training else "eval"
        # Per-micro-batch share of the generation-batch mean Σ w e / N: dividing by N / num_processes, and in training
        # by the number of micro-batches per generation batch, makes the accumulated gradient independent of the
        # micro-batch size, gradient accumulation and the number of processes (as TRL's "dapo" normalisation).
        # `steps_per_generation` micro-batches make one generation batch; `current_gradient_accumulation_steps` of
        # them one optimizer step.
        squared_error = weighted_squared_error_sum(scores, targets, weights)
        normalizer = inputs[_NUM_VALID].clamp(min=1.0) / self.accelerator.num_processes
        if mode == "train":
            normalizer = normalizer * self.current_gradient_accumulation_steps / self.args.steps_per_generation
        if self._alignment_active:
            loss = loss + self.args.self_reward_coef * squared_error / normalizer

        self._accumulate_self_reward_metrics(mode, scores, targets, weights, squared_error)
        return loss

    def _capture_eos_states(self, model, inputs):
        return capture_hidden_states(model, inputs["prompt_ids"].size(1) + inputs[_POSITIONS])

    def _loss_with_fused_head_scores(self, model, inputs) -> tuple[torch.Tensor, torch.Tensor] | None:
        """GRPO's loss and log π(z_c) of each finished completion, both from one forward through TRL's fused LM head
        (`_logps_with_self_reward`). The first time, the EOS hidden states of that forward are also projected the
        plain way to check the fused value; on disagreement this returns None and the caller recomputes the
        micro-batch the plain way (GRPO's log-probs came from the same forward)."""
        _, finished = eos_positions(inputs["completion_ids"], inputs["completion_mask"], self.eos_token_ids)
        check = self._fast_paths[FUSED_LM_HEAD] is None
        self._score_request = (inputs[_POSITIONS], finished)
        try:
            with self._capture_eos_states(model, inputs) if check else nullcontext() as capture:
                loss = super()._compute_loss(model, inputs)
        finally:
            self._score_request = None
        log_probs, self._loss_forward_log_probs = self._loss_forward_log_probs, None
        if check:
            with torch.no_grad():
                plain = token_log_probs(model, capture.hidden_states(), self.self_reward_token_id)
            if not self._check_fast_path(FUSED_LM_HEAD, log_probs, plain, finished):
                return None
        return loss, log_probs

    def _accumulate_self_reward_metrics(self, mode, scores, targets, weights, squared_error):
        """Add this micro-batch's sums and scores (all processes) to the logging window of `mode`.

        The `self_reward/` metrics are ratios of sums over the completions of the whole logging window, computed in
        `log`. Averaging per-micro-batch ratios instead would be wrong whenever a window does not cover whole
        generation batches (`logging_steps` vs `steps_per_generation` and gradient accumulation, the last window).
        """
        valid = weights != 0
        sums = torch.cat([squared_error.detach().reshape(1).float(), verification_counts(scores, targets, valid)])
        rows = torch.stack([scores.detach().float(), targets.float(), valid.float()], dim=1)
        # Equal shapes for the gather (eval batches can differ in size across processes); padded rows are not valid.
        rows = self.accelerator.gather(self.accelerator.pad_across_processes(rows, dim=0, pad_index=0))
        rows = rows[rows[:, 2] > 0]
        window = self._self_reward_window.setdefault(mode, {"sums": torch.zeros_like(sums), "rows": []})
        window["sums"] += self.accelerator.reduce(sums, reduction="sum")
        window["rows"].append(rows[:, :2].cpu())

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "train" if self.model.training else "eval"
        window = self._self_reward_window.pop(mode, None)
        if window is not None:
            squared_error, counts = window["sums"][0].item(), window["sums"][1:]
            num_valid = counts[4:].sum().item()
            rows = torch.cat(window["rows"])
            metrics = {
                "loss": squared_error / num_valid if num_valid else float("nan"),
                **metrics_from_counts(counts.tolist()),
                "auroc": auroc(rows[:, 0].tolist(), (rows[:, 1] > CORRECT_THRESHOLD).tolist()),
            }
            for name, value in metrics.items():
                # One value per window: TRL's `log` averages each list, and reports NaN (an empty class) as None.
                self._metrics[mode][f"self_reward/{name}"] = [value]
        super().log(logs, start_time)

    # ------------------------------------------------------------------------------------------------------------
    # Saving and resuming

    def self_reward_config(self) -> SelfRewardConfig | None:
        """The scoring recipe of the model being trained (None until c_ref is known)."""
        if self.ref_constant is None:
            return None
        reference = get_config_model_id(self.accelerator.unwrap_model(self.model).config)
        return SelfRewardConfig(
            token=self.self_reward_token,
            token_id=self.self_reward_token_id,
            beta=self.args.self_reward_beta,
            ref_constant=self.ref_constant,
            ref_constant_std=self.ref_constant_std,
            use_ref_model=self.args.self_reward_use_ref_model,
            reference_model=reference,
        )

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False):
        # `save_model` is the one path every save takes (checkpoints, final saves, `push_to_hub`), whatever the
        # state-dict type (FSDP sharded saves never reach `_save`).
        super().save_model(output_dir, _internal_call)
        if not self.args.should_save:
            return
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        config = self.self_reward_config()
        if config is None:
            logger.warning(
                f"Saved {output_dir} without {SELF_REWARD_CONFIG_NAME}: c_ref is not measured yet (no finished "
                "completion so far). Set `self_reward_ref_constant` to save it from the start."
            )
            return
        config.save_pretrained(output_dir)

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is not None:  # resuming must not re-measure c_ref with the trained model
            # (`self.state` is the checkpoint's by now.) Past the warm-up, the checkpoint's c_ref is the re-measured one.
            remeasured = (
                self._ref_constant_remeasure_pending and self.state.global_step > self.args.reasoning_warmup_steps
            )
            self._adopt_saved_ref_constant(checkpoint, resuming=True, override_arguments=remeasured)
            self._ref_constant_remeasure_pending &= not remeasured

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        # transformers copies only the weights, config and tokenizer of a checkpoint into the folder it pushes; a
        # revision pushed mid-run must carry the scoring recipe and the card too, or it cannot be scored.
        if self.is_world_process_zero():
            recipe = os.path.join(checkpoint_folder, SELF_REWARD_CONFIG_NAME)
            if os.path.isfile(recipe):
                shutil.copy(recipe, os.path.join(self.args.output_dir, SELF_REWARD_CONFIG_NAME))
                self.create_model_card(model_name=self.hub_model_id.split("/")[-1] if self.hub_model_id else None)
        super()._push_from_checkpoint(checkpoint_folder)

    # ------------------------------------------------------------------------------------------------------------
    # Model card

    def create_model_card(
        self, model_name: str | None = None, dataset_name: str | None = None, tags: str | list[str] | None = None
    ):
        # A built-in task (`builtin:<name>`) is generated in code: TRL would link it as a Hub dataset that does not
        # exist, so the card names it in its own section instead.
        builtin = dataset_name is not None and dataset_name.startswith(BUILTIN_PREFIX)
        super().create_model_card(model_name=model_name, dataset_name=None if builtin else dataset_name, tags=tags)
        if not self.is_world_process_zero():
            return
        section = scoring_card_section(self.self_reward_config(), self.hub_model_id, dataset_name if builtin else None)
        with open(os.path.join(self.args.output_dir, "README.md"), "a") as f:
            f.write(section)


def scoring_card_section(config: SelfRewardConfig | None, repo_id: str | None, builtin_dataset: str | None) -> str:
    """The model card's section on reading the self-reward score: the recipe (z_c, β_v, c_ref) and a snippet."""
    lines = ["", "## Self-verification with the last-token self-reward", ""]
    if builtin_dataset is not None:
        lines += [f"Trained on `{builtin_dataset}`, a task generated in code by `trl-laser` (not a Hub dataset).", ""]
    if config is None:
        lines += ["The reference constant was not measured before saving, so this model carries no scoring recipe."]
        return "\n".join(lines) + "\n"
    lines += [
        "After each completion's end-of-sequence token, this model scores its own answer with one extra token:",
        "r_s = β_v · (log π(z_c | x, y) − c_ref), read with",
        "",
        "| z_c (token, id) | β_v | c_ref |",
        "|---|---|---|",
        f"| `{config.token}` ({config.token_id}) | {config.beta:g} | {config.ref_constant:.4g} |",
        "",
        f"r_s > {CORRECT_THRESHOLD:g} means the model judges its answer correct. The recipe is saved in "
        f"`{SELF_REWARD_CONFIG_NAME}` next to the weights, so `trl-laser` reads it by itself:",
        "",
        "```python",
        "from trl_laser import SelfRewardScorer",
        "",
        f'scorer = SelfRewardScorer.from_pretrained("{repo_id or "path/to/this/model"}")',
        'samples = scorer.generate(["What is 7 + 5?"], num_samples=8, max_new_tokens=256)',
        "print(samples[0].texts, samples[0].scores)  # one score per finished completion",
        "```",
    ]
    return "\n".join(lines) + "\n"
