"""Which checkpoint an interrupted run resumes from."""

import os
import re
import warnings

from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR


_CHECKPOINT = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")


def last_complete_checkpoint(output_dir: str) -> str | None:
    """The newest `checkpoint-N` directory of `output_dir` that was written to the end; None when there is none.

    `Trainer` writes a checkpoint's `trainer_state.json` after its weights, optimizer and RNG states, and deletes older
    checkpoints only after that. A checkpoint without it was cut short (a full disk, a kill during the save), and
    `transformers.trainer_utils.get_last_checkpoint`, which returns the newest directory whatever it holds, would make
    the resumed run fail on it. The older, complete checkpoint is still there: resume from it.
    """
    if not os.path.isdir(output_dir):
        return None
    steps = sorted(
        (int(match.group(1)), name)
        for name in os.listdir(output_dir)
        if (match := _CHECKPOINT.match(name)) and os.path.isdir(os.path.join(output_dir, name))
    )
    for _, name in reversed(steps):
        path = os.path.join(output_dir, name)
        if os.path.isfile(os.path.join(path, TRAINER_STATE_NAME)):
            return path
        warnings.warn(
            f"{path} has no {TRAINER_STATE_NAME}: its save was cut short, so it is not resumed from.", stacklevel=2
        )
    return None
