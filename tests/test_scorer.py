"""SelfRewardScorer: scores read during generation equal a separate forward over the same tokens.

Completion lengths are forced with a logits processor so that every case is hit on purpose: rows finishing at
different steps, an empty completion, truncated rows, and rows whose EOS is the last generated token (generation
stopped before feeding it, so the scorer needs its one extra decode step).
"""

import math

import pytest
import torch
from transformers import LogitsProcessor

from trl_laser import SelfRewardScorer
from trl_laser.core.recipe import SelfRewardConfig, resolve_self_reward_config
from trl_laser.testing import tiny_model, tiny_tokenizer


TOLERANCE = 1e-4  # float32; cached decode and a full forward agree to ~1e-6 here
TOKEN = "<reserved_0>"
BETA, C_REF = 0.1, -5.0


pytestmark = pytest.mark.usefixtures("one_thread")


class EndAt(LogitsProcessor):
    """Row r emits EOS exactly at generated index `ends[r]` (never when None); EOS is forbidden elsewhere."""

    def __init__(self, prompt_width: int, ends: list[int | None], eos_id: int):
        self.prompt_width, self.ends, self.eos_id = prompt_width, ends, eos_id

    def __call__(self, input_ids, scores):
        step = input_ids.shape[1] - self.prompt_width
        scores = scores.clone()
        for row, end in enumerate(self.ends):
            if end == step:
                scores[row] = -math.inf
                scores[row, self.eos_id] = 0.0
            else:
                scores[row, self.eos_id] = -math.inf
        return scores


def make_scorer(pad_is_eos: bool) -> SelfRewardScorer:
    tokenizer = tiny_tokenizer(pad_is_eos=pad_is_eos)
    config = SelfRewardConfig(token=TOKEN, beta=BETA, ref_constant=C_REF)
    return SelfRewardScorer(tiny_model(tokenizer).eval(), tokenizer, config)


@pytest.fixture(scope="module", params=[True, False], ids=["pad_is_eos", "pad_not_eos"])
def scorer(request):
    return make_scorer(request.param)


def generate_forced(scorer, prompts, num_samples, ends, max_new_tokens, temperature=1.0):
    width = max(len(scorer.encode_prompt(p)) for p in prompts)
    processor = EndAt(width, ends, scorer.eos_ids[0])
    return scorer.generate(
        prompts,
        num_samples=num_samples,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        batch_size=len(ends),
        seed=0,
        logits_processor=[processor],
    )


def flatten(samples):
    prompts = [s.prompt for s in samples for _ in s.token_ids]
    ids = [i for s in samples for i in s.token_ids]
    scores = [x for s in samples for x in s.scores]
    finished = [f for s in samples for f in s.finished]
    return prompts, ids, scores, finished


def assert_scores_match_rescoring(scorer, samples):
    prompts, ids, scores, finished = flatten(samples)
    rescored = scorer.score(prompts, ids)
    for score, again, done in zip(scores, rescored, finished, strict=True):
        if done:
            assert score == pytest.approx(again, abs=TOLERANCE)
        else:
            assert score is None


@pytest.mark.parametrize("temperature", [0.0, 0.5, 2.0], ids=["greedy", "t0.5", "t2"])
def test_generation_scores_equal_rescoring_at_every_kind_of_end(scorer, temperature):
    prompts = ["What is 2+2?", "Hi"]  # different prompt lengths: left padding differs between rows
    # EOS at index 2, 5, never, 7 (= last index with 8 new tokens), 0 (empty completion), never.
    ends = [2, 5, None, 7, 0, None]
    samples = generate_forced(scorer, prompts, num_samples=3, ends=ends, max_new_tokens=8, temperature=temperature)
    _, ids, scores, finished = flatten(samples)
    assert finished == [e is not None for e in ends]
    assert [len(i) for i in ids] == [3, 6, 8, 8, 1, 8]
    assert all((s is None) == (e is None) for s, e in zip(scores, ends, strict=True))
    assert all(i[-1] in scorer.eos_ids for i, f in zip(ids, finished, strict=True) if f)
    assert samples[1].texts[1] == ""  # the EOS-only completion decodes to nothing
    assert_scores_match_rescoring(scorer, samples)


def test_all_rows_stop_early_and_last_rows_use_the_extra_step(scorer):
    # Generation stops after index 3 because every row has finished; two rows end right there.
    samples = generate_forced(scorer, ["a", "bb"], num_samples=2, ends=[1, 3, 3, 0], max_new_tokens=12)
    _, ids, scores, finished = flatten(samples)
    assert finished == [True] * 4
    assert [len(i) for i in ids] == [2, 4, 4, 1]
    assert_scores_match_rescoring(scorer, samples)


def test_unforced_sampling_matches_rescoring():
    scorer = make_scorer(pad_is_eos=True)
    samples = scorer.generate(["x", "what?", "count"], num_samples=4, max_new_tokens=40, temperature=3.0, seed=0)
    _, _, scores, finished = flatten(samples)
    assert any(finished) and not all(finished)  # seeded: both kinds occur
    assert_scores_match_rescoring(scorer, samples)


def test_score_is_beta_times_log_prob_after_eos_minus_constant():
    scorer = make_scorer(pad_is_eos=False)
    prompt, completion = "Is 3 > 2?", "yes"
    ids = scorer.encode_prompt(prompt) + scorer.tokenizer(completion, add_special_tokens=False)["input_ids"]
    ids.append(scorer.tokenizer.eos_token_id)
    with torch.no_grad():
        logits = scorer.model(input_ids=torch.tensor([ids])).logits[0, -1]
    expected = BETA * (logits.log_softmax(-1)[scorer.config.token_id].item() - C_REF)
    # Text (EOS appended), ids without EOS (appended) and ids with EOS all give the same score.
    text_score, ids_score, eos_score = scorer.score([prompt] * 3, [completion, ids[len(ids) - 4 : -1], ids[-4:]])
    assert text_score == pytest.approx(expected, abs=1e-5)
    assert ids_score == pytest.approx(expected, abs=1e-5)
    assert eos_score == pytest.approx(expected, abs=1e-5)


def test_rescoring_in_batches_does_not_change_scores():
    scorer = make_scorer(pad_is_eos=True)
    prompts = ["a", "bbbbbb", "cc", "ddd d"]
    completions = ["1", "twenty two", "", "x y z"]
    together = scorer.score(prompts, completions, batch_size=4)
    alone = [scorer.score([p], [c])[0] for p, c in zip(prompts, completions, strict=True)]
    assert together == pytest.approx(alone, abs=TOLERANCE)


def test_chat_messages_and_string_prompts_are_equivalent():
    scorer = make_scorer(pad_is_eos=True)
    assert scorer.encode_prompt("hi") == scorer.encode_prompt([{"role": "user", "content": "hi"}])


def test_from_pretrained_reads_metadata_and_overrides(laser_model_dir):
    scorer = SelfRewardScorer.from_pretrained(laser_model_dir)
    assert scorer.config == SelfRewardConfig(token=TOKEN, token_id=3, beta=0.1, ref_constant=-5.0)
    overridden = resolve_self_reward_config(laser_model_dir, beta=1.0, ref_constant=0.0)
    scorer = SelfRewardScorer.from_pretrained(laser_model_dir, overridden)
    assert (scorer.config.token_id, scorer.config.beta, scorer.config.ref_constant) == (3, 1.0, 0.0)
    # Another token replaces the saved one, and its id is resolved against the tokenizer.
    other = SelfRewardScorer.from_pretrained(laser_model_dir, resolve_self_reward_config(laser_model_dir, token="4"))
    assert (other.config.token, other.config.token_id, other.config.beta) == ("<reserved_1>", 4, 0.1)
    # Constructed from the loaded model alone, the scorer finds the metadata next to the weights.
    again = SelfRewardScorer(scorer.model, scorer.tokenizer)
    assert (again.config.beta, again.config.ref_constant) == (0.1, -5.0)


def test_without_a_recipe_it_generates_unscored_and_refuses_to_score(tiny_model_dir):
    with pytest.raises(ValueError, match="beta, ref_constant were not given.*--self-reward-ref-constant"):
        resolve_self_reward_config(tiny_model_dir, token=TOKEN)
    scorer = SelfRewardScorer.from_pretrained(tiny_model_dir)
    assert scorer.config is None
    (samples,) = scorer.generate(["Hi"], num_samples=3, max_new_tokens=8, seed=0)
    assert samples.scores == [None] * 3 and len(samples.texts) == 3
    with pytest.raises(ValueError, match="no scoring recipe"):
        scorer.score(["Hi"], ["there"])
    scorer = SelfRewardScorer.from_pretrained(tiny_model_dir, resolve_self_reward_config(None, TOKEN, 0.1, -5.0))
    assert scorer.config.token_id == 3


def test_eos_cannot_be_the_self_reward_token():
    tokenizer = tiny_tokenizer()
    with pytest.raises(ValueError, match="EOS"):
        SelfRewardScorer(
            tiny_model(tokenizer), tokenizer, SelfRewardConfig(token="<|im_end|>", beta=0.1, ref_constant=-5.0)
        )


class Write(LogitsProcessor):
    """Row r writes the token ids `texts[r]` (then EOS), whatever the model prefers."""

    def __init__(self, prompt_width: int, texts: list[list[int]], eos_id: int):
        self.prompt_width, self.texts, self.eos_id = prompt_width, texts, eos_id

    def __call__(self, input_ids, scores):
        step = input_ids.shape[1] - self.prompt_width
        forced = torch.full_like(scores, -math.inf)
        for row, ids in enumerate(self.texts):
            forced[row, ids[step] if step < len(ids) else self.eos_id] = 0.0
        return forced


def test_stop_strings_and_assistant_prefixes(scorer):
    """The correction loops continue an assistant turn and stop at a marker: a stopped completion keeps its stop
    string, is not finished, has no score and no padding; the other rows are unaffected."""
    prompts, prefixes = ["Which is larger?", "Hi"], ["So: ", ""]
    encode = scorer.tokenizer
    texts = [
        encode("72 Check: ok", add_special_tokens=False)["input_ids"],
        encode("45", add_special_tokens=False)["input_ids"],
    ]
    width = max(len(scorer.encode_prompt(p, prefix)) for p, prefix in zip(prompts, prefixes, strict=True))
    assert (
        scorer.encode_prompt(prompts[0], prefixes[0])
        == encode(
            encode.apply_chat_template(
                [{"role": "user", "content": prompts[0]}], tokenize=False, add_generation_prompt=True
            )
            + "So: ",
            add_special_tokens=False,
        )["input_ids"]
    )
    stopped, ended = scorer.generate(
        prompts,
        max_new_tokens=20,
        batch_size=2,
        assistant_prefixes=prefixes,
        stop=["Check:"],
        logits_processor=[Write(width, texts, scorer.eos_ids[0])],
    )
    (stopped,), (ended,) = stopped.completions, ended.completions
    assert (stopped.text, stopped.stop, stopped.finished, stopped.score) == ("72 Check:", "Check:", False, None)
    assert scorer.tokenizer.decode(stopped.token_ids) == "72 Check:"
    assert (ended.text, ended.stop, ended.finished) == ("45", None, True)
    assert ended.token_ids[-1] in scorer.eos_ids
    assert ended.score == pytest.approx(scorer.score(["Hi"], [ended.token_ids])[0], abs=TOLERANCE)
    assert scorer.count_tokens("72 Check:") == 9  # the tiny tokenizer is character-level


@pytest.mark.parametrize("generation_eos", [None, 2, [0, 2], [5, 0]], ids=["none", "same", "two", "other"])
def test_scorer_ends_completions_where_trl_does(tmp_path, generation_eos, make_trainer):
    """The scorer's EOS ids are TRL's (`GRPOTrainer.eos_token_ids`), with the tokenizer's EOS first: it is the one
    appended when scoring a text that has none."""
    from transformers import AutoModelForCausalLM

    from trl_laser.testing import save_tiny_model

    directory = save_tiny_model(str(tmp_path / "model"))
    model = AutoModelForCausalLM.from_pretrained(directory)
    model.generation_config.eos_token_id = generation_eos
    model.save_pretrained(directory)
    trainer = make_trainer(model=directory)
    scorer = SelfRewardScorer.from_pretrained(directory)
    assert set(scorer.eos_ids) == set(trainer.eos_token_ids)
    assert scorer.eos_ids[0] == scorer.tokenizer.eos_token_id
