"""The vLLM scoring request (one forced token per sequence) and its parsing, with stand-ins for vLLM: no GPU needed.

The stand-in LLM answers a request the way vLLM documents it, computing the log-probs with the tiny transformers
model, in each `logprobs_mode`: the scorer must give the transformers scores with raw log-probs and refuse the other
modes before scoring."""

import math
import sys
import types
from dataclasses import dataclass, field

import pytest
import torch

from trl_laser import SelfRewardScorer
from trl_laser.core.recipe import SelfRewardConfig
from trl_laser.scoring.scorer import (
    check_vllm_logprobs_mode,
    parse_vllm_scores,
    vllm_logprobs_mode,
    vllm_scoring_params,
)
from trl_laser.testing import tiny_model, tiny_tokenizer


Z_C = 3


@dataclass
class FakeSamplingParams:
    max_tokens: int = 16
    temperature: float = 1.0
    allowed_token_ids: list | None = None
    logprobs: int | None = None
    extra: dict = field(default_factory=dict)


@dataclass
class FakeTokensPrompt:
    prompt_token_ids: list


def sample_output(token_ids, logprobs):
    return types.SimpleNamespace(outputs=[types.SimpleNamespace(token_ids=token_ids, logprobs=logprobs)])


def logprob_entry(token_id, value):
    return {token_id: types.SimpleNamespace(logprob=value, rank=1, decoded_token="z")}


class FakeLLM:
    """Answers one-token requests from a transformers model, as vLLM does in the given `logprobs_mode`."""

    __module__ = "vllm.entrypoints.llm"  # what the scorer checks to tell a vLLM engine from a transformers model

    def __init__(self, model, mode="raw_logprobs"):
        self.model = model
        self.llm_engine = types.SimpleNamespace(model_config=types.SimpleNamespace(logprobs_mode=mode))
        self.requests = []

    def generate(self, prompts, params, use_tqdm=True):
        self.requests.append((prompts, params))
        mode = self.llm_engine.model_config.logprobs_mode
        outputs = []
        for prompt in prompts:
            with torch.no_grad():
                logits = self.model(torch.tensor([prompt.prompt_token_ids])).logits[0, -1]
            allowed = params.allowed_token_ids
            masked = torch.full_like(logits, -math.inf)
            masked[allowed] = logits[allowed] / params.temperature
            token = int(masked.argmax())
            value = {
                "raw_logprobs": logits.log_softmax(-1)[token],
                "raw_logits": logits[token],
                "processed_logprobs": masked.log_softmax(-1)[token],
                "processed_logits": masked[token],
            }[mode]
            outputs.append(sample_output([token], [logprob_entry(token, value.item())]))
        return outputs


@pytest.fixture
def fake_vllm(monkeypatch):
    module = types.ModuleType("vllm")
    module.SamplingParams = FakeSamplingParams
    inputs = types.ModuleType("vllm.inputs")
    inputs.TokensPrompt = FakeTokensPrompt
    module.inputs = inputs
    monkeypatch.setitem(sys.modules, "vllm", module)
    monkeypatch.setitem(sys.modules, "vllm.inputs", inputs)
    return module


def test_the_request_forces_one_token_and_asks_for_its_log_prob():
    params = vllm_scoring_params(FakeSamplingParams, Z_C)
    assert (params.max_tokens, params.temperature, params.allowed_token_ids, params.logprobs) == (1, 1.0, [Z_C], 0)


def test_parsing_reads_the_forced_token_log_prob():
    outputs = [sample_output([Z_C], [logprob_entry(Z_C, -3.5)]), sample_output([Z_C], [logprob_entry(Z_C, -0.25)])]
    assert parse_vllm_scores(outputs, Z_C) == [-3.5, -0.25]


@pytest.mark.parametrize(
    "output, message",
    [
        (sample_output([7], [logprob_entry(7, -1.0)]), r"returned tokens \[7\]"),
        (sample_output([Z_C], None), "with no log-probs"),
        (sample_output([Z_C, 2], [logprob_entry(Z_C, -1.0)]), r"returned tokens \[3, 2\]"),
        (sample_output([Z_C], [logprob_entry(Z_C, 4.2)]), "returned 4.2 for log π"),  # a raw logit
        (sample_output([Z_C], [logprob_entry(Z_C, math.nan)]), "no log-probability"),
    ],
)
def test_parsing_refuses_a_request_vllm_did_not_honour(output, message):
    with pytest.raises(RuntimeError, match=message):
        parse_vllm_scores([output], Z_C)


@pytest.mark.parametrize("mode", ["raw_logits", "processed_logprobs", "processed_logits"])
def test_other_logprobs_modes_are_refused_with_the_fix(mode):
    llm = FakeLLM(model=None, mode=mode)
    assert vllm_logprobs_mode(llm) == mode
    with pytest.raises(ValueError, match=r"logprobs_mode='raw_logprobs'"):
        check_vllm_logprobs_mode(llm)


def test_mode_as_an_enum_and_older_vllm_without_the_option():
    def engine(model_config):
        return types.SimpleNamespace(llm_engine=types.SimpleNamespace(model_config=model_config))

    def with_mode(mode):
        return engine(types.SimpleNamespace(logprobs_mode=mode))

    # recent vLLM stores the mode as an enum: its value is read, and the same modes pass or fail as with a string
    raw = with_mode(types.SimpleNamespace(value="raw_logprobs"))
    processed = with_mode(types.SimpleNamespace(value="processed_logprobs"))
    assert vllm_logprobs_mode(raw) == "raw_logprobs"
    check_vllm_logprobs_mode(raw)
    assert vllm_logprobs_mode(processed) == "processed_logprobs"
    with pytest.raises(ValueError, match="processed_logprobs"):
        check_vllm_logprobs_mode(processed)
    # vLLM before the option returned raw log-probs: accepted as such
    older = engine(object())
    assert vllm_logprobs_mode(older) == "raw_logprobs"
    check_vllm_logprobs_mode(older)


def test_vllm_path_scores_equal_the_transformers_path(fake_vllm, one_thread):
    tokenizer = tiny_tokenizer()
    model = tiny_model(tokenizer).eval()
    config = SelfRewardConfig(token="<reserved_0>", beta=0.5, ref_constant=-4.0)
    prompts = [[{"role": "user", "content": f"What is {i} + 1?"}] for i in range(3)]
    completions = ["12", "7 apples", "I think 4"]
    expected = SelfRewardScorer(model, tokenizer, config).score(prompts, completions)
    llm = FakeLLM(model)
    scorer = SelfRewardScorer(llm, tokenizer, config)
    assert scorer.is_vllm
    assert scorer.score(prompts, completions) == pytest.approx(expected, abs=1e-6)
    ((requests, params),) = llm.requests
    assert (params.max_tokens, params.allowed_token_ids, params.logprobs) == (1, [Z_C], 0)
    assert all(request.prompt_token_ids[-1] == tokenizer.eos_token_id for request in requests)


def test_a_vllm_engine_in_processed_mode_is_refused_before_scoring(fake_vllm):
    tokenizer = tiny_tokenizer()
    llm = FakeLLM(tiny_model(tokenizer), mode="processed_logprobs")
    config = SelfRewardConfig(token="<reserved_0>", beta=0.5, ref_constant=-4.0)
    with pytest.raises(ValueError, match="processed_logprobs"):
        SelfRewardScorer(llm, tokenizer, config)
    assert llm.requests == []
