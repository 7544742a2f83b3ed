"""Stage 2 of self-rewarding correction (`examples/rl_self_correction.py`): choosing the trainer from the command
line or a YAML config, the KL coefficient, the EOS ids that decide truncation, and a LaSeR run on attempts."""

import importlib.util
import json
import os
from pathlib import Path

import pytest
from transformers import AutoTokenizer, GenerationConfig
from trl import GRPOConfig, ModelConfig

from trl_laser import LaSeRConfig
from trl_laser.tasks import DatasetArguments
from trl_laser.testing import save_tiny_model, tiny_training_args


EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(scope="module")
def rl():
    spec = importlib.util.spec_from_file_location("rl_self_correction", EXAMPLES / "rl_self_correction.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_use_laser_from_yaml_and_either_spelling(rl, tmp_path):
    config = tmp_path / "rl.yaml"
    config.write_text("use_laser: true\nmodel_name_or_path: org/some-model\nmax_steps: 2\n")
    assert rl._pre_parse(["--config", str(config)]) == (True, False)
    # the command line overrides the file
    assert rl._pre_parse(["--config", str(config), "--use-laser", "false"]) == (False, False)
    assert rl._pre_parse(["--use-laser"]) == (True, True)
    # the full parse then builds a LaSeRConfig: LaSeRGRPOTrainer accepts it
    argv = ["--config", str(config), "--output_dir", str(tmp_path / "out"), "--self_reward_token", "<reserved_0>"]
    use_laser, demo = rl._pre_parse(argv)
    _, training_args, model_args, script_args = rl.make_parser(use_laser, demo).parse_args_and_config(argv)
    assert isinstance(training_args, LaSeRConfig) and script_args.use_laser and training_args.max_steps == 2
    assert model_args.model_name_or_path == "org/some-model"


def test_hub_ids_are_not_refused_and_beta_is_exposed(rl, tmp_path):
    rl.check_model("HuggingFaceTB/SmolLM2-135M-Instruct")  # a Hub id: left to from_pretrained
    if not os.path.exists(rl.DEMO_MODEL):
        with pytest.raises(SystemExit, match="Run stage 1 first"):
            rl.check_model(rl.DEMO_MODEL)
    argv = ["--beta", str(rl.PAPER_KL_COEF), "--output_dir", str(tmp_path)]
    _, training_args, _, _ = rl.make_parser(False, True).parse_args_and_config(argv)
    assert isinstance(training_args, GRPOConfig) and training_args.beta == rl.PAPER_KL_COEF == 0.001


def test_demo_starts_the_laser_variant_from_the_starting_model(rl, monkeypatch):
    import trl_laser.demo_model

    monkeypatch.setattr(trl_laser.demo_model, "demo_model_path", lambda: "/cache/SmolLM2-135M-Instruct")
    assert rl.default_model(use_laser=True) == "/cache/SmolLM2-135M-Instruct"  # no verbal SFT before LaSeR
    assert rl.default_model(use_laser=False) == rl.DEMO_MODEL == "outputs/sft-self-correction"


def test_truncation_uses_every_eos_id_of_the_generation_config(rl, tmp_path):
    model = save_tiny_model(str(tmp_path / "m"))
    GenerationConfig(eos_token_id=[2, 0], pad_token_id=2).save_pretrained(model)
    tokenizer = AutoTokenizer.from_pretrained(model)
    assert rl.completion_eos_ids(model, tokenizer) == [2, 0]


def test_laser_variant_trains_on_attempts(rl, tmp_path, tiny_model_dir, one_thread):
    args = tiny_training_args(tmp_path / "laser", LaSeRConfig, max_steps=1, per_device_train_batch_size=4,
                              num_generations=2, max_completion_length=6, bf16=False)  # fmt: skip
    out = rl.main(DatasetArguments(num_problems=2, dataset_seed=1), args, ModelConfig(tiny_model_dir), True, 1)
    # the LaSeR checkpoint carries its scoring recipe: the LaSeR loop can load it
    assert json.load(open(os.path.join(out, "self_reward_config.json")))["token"] == "<reserved_0>"
    with pytest.raises(TypeError, match="LaSeRConfig"):
        rl.main(DatasetArguments(num_problems=2), GRPOConfig(output_dir=str(tmp_path / "x"), use_cpu=True, bf16=False),
                ModelConfig(tiny_model_dir), True)  # fmt: skip
