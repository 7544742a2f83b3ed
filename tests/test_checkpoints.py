"""Resuming an interrupted run: the last checkpoint whose save finished, never one that was cut short."""

import pytest

from trl_laser.training.checkpoints import last_complete_checkpoint


def make_checkpoint(output_dir, step, complete=True):
    path = output_dir / f"checkpoint-{step}"
    path.mkdir()
    (path / "model.safetensors").write_bytes(b"weights")
    if complete:  # Trainer writes trainer_state.json last
        (path / "trainer_state.json").write_text("{}")
    return str(path)


def test_the_newest_complete_checkpoint_by_step_number_not_by_name(tmp_path):
    make_checkpoint(tmp_path, 20)
    newest = make_checkpoint(tmp_path, 100)  # "checkpoint-100" < "checkpoint-20" as strings
    make_checkpoint(tmp_path, 9)
    assert last_complete_checkpoint(str(tmp_path)) == newest


def test_a_checkpoint_cut_short_is_skipped_with_a_warning(tmp_path):
    complete = make_checkpoint(tmp_path, 20)
    make_checkpoint(tmp_path, 40, complete=False)
    with pytest.warns(UserWarning, match="checkpoint-40 has no trainer_state.json"):
        assert last_complete_checkpoint(str(tmp_path)) == complete


def test_nothing_to_resume_from(tmp_path):
    assert last_complete_checkpoint(str(tmp_path / "missing")) is None
    assert last_complete_checkpoint(str(tmp_path)) is None
    (tmp_path / "checkpoint-50").write_text("a file, not a checkpoint")
    (tmp_path / "checkpoint-60-old").mkdir()
    (tmp_path / "checkpoint-60-old" / "trainer_state.json").write_text("{}")
    assert last_complete_checkpoint(str(tmp_path)) is None
    make_checkpoint(tmp_path, 10, complete=False)
    with pytest.warns(UserWarning):
        assert last_complete_checkpoint(str(tmp_path)) is None
