import torch

from trl_laser.core.readout import capture_hidden_states, eos_positions, token_log_probs, untempered_logits
from trl_laser.testing import tiny_model, tiny_tokenizer


def test_eos_positions_with_eos_equal_to_pad():
    eos = 2
    completion_ids = torch.tensor([[7, 8, 2, 2, 2], [7, 2, 2, 2, 2], [7, 8, 9, 10, 11], [2, 2, 2, 2, 2]])
    completion_mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    positions, finished = eos_positions(completion_ids, completion_mask, [eos])
    assert finished.tolist() == [True, True, False, True]
    assert positions.tolist() == [2, 1, 0, 0]


def test_eos_positions_with_distinct_pad_and_masked_truncation():
    completion_ids = torch.tensor([[7, 2, 0, 0], [7, 8, 9, 10], [5, 3, 2, 0]])
    # the second row is truncated and masked out entirely (mask_truncated_completions=True)
    completion_mask = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 0]])
    positions, finished = eos_positions(completion_ids, completion_mask, [2, 3])
    assert finished.tolist() == [True, False, True]
    assert positions.tolist() == [1, 0, 2]


def test_captured_row_matches_full_forward_logits():
    tokenizer = tiny_tokenizer()
    model = tiny_model(tokenizer).eval()
    input_ids = torch.randint(6, len(tokenizer), (3, 9))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, :3] = 0  # a left-padded row
    positions = torch.tensor([8, 4, 6])
    with torch.no_grad(), capture_hidden_states(model, positions) as capture:
        for start in (0, 2):  # a forward in two chunks, as TRL runs it
            logits = model(input_ids=input_ids[start : start + 2], attention_mask=attention_mask[start : start + 2])
    full = model(input_ids=input_ids, attention_mask=attention_mask).logits
    expected = full[torch.arange(3), positions]
    assert torch.allclose(untempered_logits(model, capture.hidden_states()), expected, atol=1e-5)
    log_probs = token_log_probs(model, capture.hidden_states(), token_id=3)
    assert torch.allclose(log_probs, expected.log_softmax(-1)[:, 3], atol=1e-5)
    assert logits is not None


def test_softcapping_is_applied():
    tokenizer = tiny_tokenizer()
    model = tiny_model(tokenizer).eval()
    hidden = torch.randn(2, model.config.hidden_size) * 50
    raw = model.lm_head(hidden)
    model.config.final_logit_softcapping = 3.0
    assert torch.allclose(untempered_logits(model, hidden), torch.tanh(raw / 3.0) * 3.0)
