import os

import pytest
import torch
from datasets import Dataset

from trl_laser.core.recipe import SelfRewardConfig
from trl_laser.scoring.scorer import SelfRewardScorer
from trl_laser.testing import make_trainer as build_trainer
from trl_laser.testing import save_tiny_model


os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny Llama + char-level ChatML tokenizer on disk, EOS == pad."""
    return save_tiny_model(str(tmp_path_factory.mktemp("tiny")))


@pytest.fixture(scope="session")
def tiny_model_dir_distinct_pad(tmp_path_factory):
    """Same architecture, with a pad token that differs from EOS."""
    return save_tiny_model(str(tmp_path_factory.mktemp("tiny_pad")), pad_is_eos=False)


@pytest.fixture(scope="session")
def laser_model_dir(tmp_path_factory):
    """The tiny model saved with a scoring recipe, as LaSeRGRPOTrainer saves a checkpoint."""
    directory = save_tiny_model(str(tmp_path_factory.mktemp("laser_model")))
    SelfRewardConfig(token="<reserved_0>", token_id=3, beta=0.1, ref_constant=-5.0).save_pretrained(directory)
    return directory


@pytest.fixture
def prompt_dataset():
    prompts = [[{"role": "user", "content": f"What is {i} + {i % 3}?"}] for i in range(32)]
    return Dataset.from_dict({"prompt": prompts, "answer": [str(i + i % 3) for i in range(32)]})


@pytest.fixture
def make_trainer(tmp_path, tiny_model_dir, prompt_dataset):
    """`make_trainer(name="out", **kwargs)`: `trl_laser.testing.make_trainer` with the tiny model, `prompt_dataset`
    and the output directory `tmp_path / name` as defaults."""

    def make(name: str = "out", **kwargs):
        kwargs.setdefault("model", tiny_model_dir)
        kwargs.setdefault("train_dataset", prompt_dataset)
        return build_trainer(tmp_path / name, **kwargs)

    return make


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run faster on one thread, and much faster when other processes share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def loads(monkeypatch):
    """Count the models the command loads (and fail the test if it loads one while `refuse` is set)."""
    calls = {"count": 0, "refuse": False}
    original = SelfRewardScorer.from_pretrained.__func__

    def counting(cls, *args, **kwargs):
        if calls["refuse"]:
            raise AssertionError("the model was loaded although the input is invalid")
        calls["count"] += 1
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(SelfRewardScorer, "from_pretrained", classmethod(counting))
    return calls
