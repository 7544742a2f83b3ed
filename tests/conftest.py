import os

import pytest
import torch
from datasets import Dataset

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


@pytest.fixture
def prompt_dataset():
    prompts = [[{"role": "user", "content": f"What is {i} + {i % 3}?"}] for i in range(32)]
    return Dataset.from_dict({"prompt": prompts, "answer": [str(i + i % 3) for i in range(32)]})


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run faster on one thread, and much faster when other processes share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
