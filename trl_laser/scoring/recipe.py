"""What scoring with a trained model needs, saved next to its weights.

A LaSeR checkpoint directory holds `self_reward_config.json` beside `config.json`:

    {"token": "<repo_name>", "token_id": 4, "beta": 0.1, "ref_constant": -20.1, "ref_constant_std": 1.4,
     "use_ref_model": false, "reference_model": "HuggingFaceTB/SmolLM2-135M-Instruct", "format_version": 1}

With it, r_s = beta · (log π(token | x, y) − ref_constant) can be computed from the checkpoint alone. When
`use_ref_model` is true the model was trained against the reference model's real log-probs (`reference_model`);
the constant is still stored and is what scoring uses unless a reference model is given.
"""

import json
import os
from dataclasses import asdict, dataclass, fields


SELF_REWARD_CONFIG_NAME = "self_reward_config.json"
FORMAT_VERSION = 1


@dataclass
class SelfRewardConfig:
    """The scoring recipe of a LaSeR model: r_s = beta · (log π(token | x, y) − ref_constant)."""

    token: str
    token_id: int
    beta: float
    ref_constant: float
    use_ref_model: bool = False
    ref_constant_std: float | None = None
    reference_model: str | None = None
    format_version: int = FORMAT_VERSION

    def save_pretrained(self, directory: str) -> str:
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, SELF_REWARD_CONFIG_NAME)
        with open(path, "w") as f:
            json.dump(asdict(self), f, indent=2)
            f.write("\n")
        return path


def load_self_reward_config(path: str) -> SelfRewardConfig:
    """Read the LaSeR metadata of a saved model (a directory, or the `self_reward_config.json` file itself)."""
    file = path if path.endswith(".json") else os.path.join(path, SELF_REWARD_CONFIG_NAME)
    if not os.path.isfile(file):
        raise FileNotFoundError(
            f"No LaSeR metadata at {path!r}: expected {SELF_REWARD_CONFIG_NAME} in the model directory. It is written "
            "by LaSeRGRPOTrainer when it saves a model; for another model, give the self-reward token and reference "
            "constant explicitly (see `trl-laser estimate-constant`)."
        )
    with open(file) as f:
        data = json.load(f)
    known = {f.name for f in fields(SelfRewardConfig)}
    missing = {"token", "token_id", "beta", "ref_constant"} - data.keys()
    if missing:
        raise ValueError(f"{file} is missing the field(s) {sorted(missing)}; it was not written by trl-laser.")
    if data.get("format_version", FORMAT_VERSION) > FORMAT_VERSION:
        raise ValueError(f"{file} has format_version {data['format_version']}; upgrade trl-laser to read it.")
    return SelfRewardConfig(**{k: v for k, v in data.items() if k in known})
