"""What scoring with a trained model needs, saved next to its weights.

A LaSeR checkpoint directory holds `self_reward_config.json` beside `config.json`:

    {"token": "<repo_name>", "beta": 0.1, "ref_constant": -20.1, "token_id": 4, "use_ref_model": false,
     "ref_constant_std": 1.4, "reference_model": "HuggingFaceTB/SmolLM2-135M-Instruct", "format_version": 1}

With it, r_s = beta · (log π(token | x, y) − ref_constant) can be computed from the checkpoint alone. When
`use_ref_model` is true the model was trained against the reference model's real log-probs (`reference_model`);
the constant is still stored and is what scoring uses unless a reference model is given.
"""

import json
import math
import os
from dataclasses import asdict, dataclass, fields, replace

from accelerate import PartialState
from accelerate.logging import get_logger


logger = get_logger(__name__)

SELF_REWARD_CONFIG_NAME = "self_reward_config.json"
FORMAT_VERSION = 1


@dataclass
class SelfRewardConfig:
    """The scoring recipe of a LaSeR model: r_s = beta · (log π(token | x, y) − ref_constant).

    One object carries it through the scorer, the evaluation, the correction loop and the command line. `token` is a
    token string (or id); `token_id` is filled in when the scorer resolves the token against a tokenizer.
    """

    token: str | int
    beta: float
    ref_constant: float
    token_id: int | None = None
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
        try:
            data = json.load(f)
        except json.JSONDecodeError as error:
            raise ValueError(
                f"{file} is not valid JSON ({error}); the file is corrupt or was cut short. Save the model again with "
                "LaSeRGRPOTrainer, or delete the file and give the recipe explicitly."
            ) from None
    if not isinstance(data, dict):
        raise ValueError(
            f"{file} must hold a JSON object, not {type(data).__name__}; it was not written by trl-laser."
        )
    known = {f.name for f in fields(SelfRewardConfig)}
    missing = {"token", "token_id", "beta", "ref_constant"} - data.keys()
    if missing:
        raise ValueError(f"{file} is missing the field(s) {sorted(missing)}; it was not written by trl-laser.")
    version = data.get("format_version", FORMAT_VERSION)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(f"{file} has format_version {version!r}; upgrade trl-laser to read it.")
    _check_recipe_values(data, file)
    return SelfRewardConfig(**{k: v for k, v in data.items() if k in known})


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_recipe_values(data: dict, file: str):
    problems = []
    if not isinstance(data["token"], (str, int)) or isinstance(data["token"], bool):
        problems.append(f"token must be a token string or id, got {data['token']!r}")
    if not isinstance(data["token_id"], int) or isinstance(data["token_id"], bool) or data["token_id"] < 0:
        problems.append(f"token_id must be a non-negative integer, got {data['token_id']!r}")
    if not _is_number(data["beta"]) or data["beta"] <= 0:
        problems.append(f"beta must be a positive number, got {data['beta']!r}")
    if not _is_number(data["ref_constant"]) or data["ref_constant"] > 0:
        problems.append(f"ref_constant must be a finite log-probability (<= 0), got {data['ref_constant']!r}")
    if problems:
        raise ValueError(
            f"{file} is corrupt: {'; '.join(problems)}. Save the model again with LaSeRGRPOTrainer, or fix the file "
            "(`trl-laser estimate-constant` measures ref_constant)."
        )


def resolve_self_reward_config(
    path: str | None, token: str | int | None = None, beta: float | None = None, ref_constant: float | None = None
) -> SelfRewardConfig:
    """The recipe saved with the model at `path` (if any), with the given values replacing the saved ones.

    Raises a ValueError naming the options to pass when a value is neither given nor saved.
    """
    if path is not None and os.path.isfile(os.path.join(path, SELF_REWARD_CONFIG_NAME)):
        saved = load_self_reward_config(path)
        if saved.use_ref_model and ref_constant is None:
            PartialState()  # accelerate's logger needs its state, also outside `accelerate launch`
            logger.warning(
                f"{path} was trained against the reference model's real log-probs; scoring uses the stored constant "
                f"c_ref = {saved.ref_constant}."
            )
        given = {"beta": beta, "ref_constant": ref_constant}
        overrides = {name: float(value) for name, value in given.items() if value is not None}
        if token is not None:  # another token: its id is resolved again
            overrides.update(token=token, token_id=None)
        return replace(saved, **overrides)
    given = {"token": token, "beta": beta, "ref_constant": ref_constant}
    missing = [name for name, value in given.items() if value is None]
    if missing:
        where = f"{path!r} has no {SELF_REWARD_CONFIG_NAME}" if path else "the model has no LaSeR metadata"
        raise ValueError(
            f"Cannot score: {where} and {', '.join(missing)} {'was' if len(missing) == 1 else 'were'} not given. Use a "
            "checkpoint saved by LaSeRGRPOTrainer, or give the recipe (command line: --self-reward-token, "
            "--self-reward-beta, --self-reward-ref-constant); measure the constant with `trl-laser estimate-constant`."
        )
    return SelfRewardConfig(token=token, beta=float(beta), ref_constant=float(ref_constant))
