"""The LaSeR variant of self-rewarding correction: the last-token score of each attempt decides "revise or stop".

The score must be read where training put it. Here that place is the end of each attempt:

- an attempt is one completion that ends with EOS; its context is the task's prompt with the assistant turn already
  holding the previous attempts, each followed by the "wrong" verdict and the revision cue (`attempt_prefix`);
- training (LaSeR RL, `LaSeRGRPOTrainer`) samples such completions from rows built by `attempt_rows` (first attempts,
  and revisions of the model's own first attempts) and regresses the score after each completion's EOS onto that
  completion's OWN correctness (`make_attempt_reward`), never onto the outcome of a later attempt;
- the inference loop (`self_correct(..., mode="laser")`) generates each attempt in the same context, tokenized the
  same way (`attempt_prompt_text`), and reads the score at the step whose input is the attempt's EOS, from the
  generation cache (`SelfRewardScorer.generate` carries it on each completion): one token per judgement, no second
  prefill.

The model never writes a self-evaluation in this variant; the loop writes the "wrong" verdict into the context.
"""

from collections.abc import Callable, Sequence

from ..tasks.answers import completion_text
from ..tasks.format import CorrectionFormat
from ..tasks.task import Task
from .rewards import cut_before_eos


def attempt_prefix(fmt: CorrectionFormat, previous_attempts: Sequence[str]) -> str:
    """The assistant text that precedes the next attempt: nothing for a first attempt; otherwise the previous
    attempts, each judged "wrong", and the revision cue (the trajectory format of `CorrectionFormat.assemble`)."""
    if not previous_attempts:
        return ""
    verdicts = [fmt.wrong_verdict] * len(previous_attempts)
    return fmt.assemble(list(previous_attempts), verdicts) + fmt.revision_prefix


def split_attempt(text: str, fmt: CorrectionFormat) -> tuple[str, bool]:
    """The attempt in a completion, and whether the completion is ONE attempt (it did not go on into a revision).

    A model fine-tuned on verbal trajectories may still write its own self-evaluation after the answer; that text is
    not part of the attempt. A completion that goes on to revise by itself is not one attempt: its end, where the
    score sits, is not the end of the attempt whose correctness it would be regressed onto.
    """
    attempts = fmt.split(text)
    return attempts[0].text, not any(a.text for a in attempts[1:])


def attempt_prompt_text(tokenizer, prompt: list[dict] | str, prefix: str = "") -> str:
    """The text prompt of an attempt: the chat template with the assistant turn opened, then `prefix`.

    It is rendered exactly as `SelfRewardScorer.encode_prompt(prompt, prefix)` renders it, so a training row made of
    this text and the loop's generation see the same tokens before the attempt (tested).
    """
    if isinstance(prompt, str) and getattr(tokenizer, "chat_template", None) is None:
        return prompt + prefix
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) + prefix


def make_attempt_reward(task: Task, eos_token_ids: Sequence[int] | None = None) -> Callable[..., list[float]]:
    """TRL reward `f(completions, answer, **kwargs) -> list[float]`: 1.0 when the completion is one finished attempt
    whose own answer is right, else 0.0 (cut by the length limit, no answer, a wrong answer, or a completion that went
    on into a revision by itself). With LaSeR, this is the r_v the score after the completion's EOS is regressed on.
    """
    eos = set(eos_token_ids or ())
    fmt = task.correction

    def attempt_reward(completions, answer, completion_ids=None, **kwargs) -> list[float]:
        rewards = []
        for i, (completion, gold) in enumerate(zip(completions, answer, strict=True)):
            truncated = cut_before_eos(completion_ids, i, eos)
            attempt, single = split_attempt(completion_text(completion), fmt)
            rewards.append(float(not truncated and single and task.is_correct(attempt, gold)))
        return rewards

    attempt_reward.__name__ = "attempt_reward"
    return attempt_reward


def attempt_rows(
    problems,
    task: Task,
    tokenizer,
    generator=None,
    revisions_per_problem: int = 1,
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    seed: int = 0,
) -> list[dict]:
    """Training rows (`prompt` text, `answer`, `kind`) for LaSeR RL on attempts.

    Every problem (a row with `problem` and `answer`) gives a first-attempt row; with a `generator` (a
    `SelfRewardScorer` on the model to be trained), `revisions_per_problem` first attempts are sampled from it and
    each finished one with an answer gives a revision row, whose context holds that attempt judged "wrong". Right
    and wrong attempts are both kept: the loop asks for a revision whenever the score says "wrong", and a revision of
    a right answer must keep it right.
    """
    fmt = task.correction
    problems = list(problems)
    conversations = [task.build_prompt(p["problem"]) for p in problems]
    rows = [
        {"prompt": attempt_prompt_text(tokenizer, c), "answer": str(p["answer"]), "kind": "first"}
        for p, c in zip(problems, conversations, strict=True)
    ]
    if generator is None or revisions_per_problem < 1:
        return rows
    outputs = generator.generate(
        conversations, num_samples=revisions_per_problem, max_new_tokens=max_new_tokens, temperature=temperature,
        seed=seed,
    )  # fmt: skip
    for p, conversation, samples in zip(problems, conversations, outputs, strict=True):
        for completion in samples.completions:
            attempt, single = split_attempt(completion.text, fmt)
            if not completion.finished or not single or task.extract_answer(attempt) is None:
                continue
            prompt = attempt_prompt_text(tokenizer, conversation, attempt_prefix(fmt, [attempt]))
            rows.append({"prompt": prompt, "answer": str(p["answer"]), "kind": "revision"})
    return rows


def trajectory_attempts(row: dict, tokenizer, fmt: CorrectionFormat) -> list[dict]:
    """Supervised examples (`prompt` text, `completion`) in the LaSeR variant's format from one stage-1 trajectory row
    (`type`, `messages` ending in the assistant trajectory): every correct attempt of the trajectory, each in the
    context the LaSeR loop generates it in (`attempt_prefix`), ending where the loop reads the score (TRL's SFTTrainer
    appends the EOS). No verdict is a target: in this variant the loop writes the verdict.

    D3 and D2 give their (correct) first attempt; D1 and D2 give their revision, after the first attempt judged
    "wrong" (D1: a wrong attempt, so the revision fixes it; D2: a right one, so the revision keeps it). D1's wrong
    first attempt is never a target.
    """
    attempts = [a.text for a in fmt.split(row["messages"][-1]["content"])]
    conversation = row["messages"][:-1]
    examples = []
    if row["type"] in ("D2", "D3"):
        examples.append({"prompt": attempt_prompt_text(tokenizer, conversation), "completion": attempts[0]})
    if row["type"] in ("D1", "D2"):
        prefix = attempt_prefix(fmt, attempts[:1])
        examples.append(
            {"prompt": attempt_prompt_text(tokenizer, conversation, prefix), "completion": fmt.separator + attempts[1]}
        )
    return examples
