"""Telling a local model directory from a Hub id before anything is loaded."""

import os


def looks_like_local_path(name: str) -> bool:
    """Whether `name` can only mean a local path: absolute, starting with `.` or `~`, a Windows path, or with more
    than one `/` (a Hub id is `name` or `owner/name`)."""
    return (
        os.path.isabs(name) or name.startswith((".", "~")) or "\\" in name or name.count("/") > 1 or name.endswith("/")
    )


def check_model_path(name: str) -> str:
    """Raise a FileNotFoundError naming the fix when `name` is meant as a local model directory that does not exist
    (so that a mistyped path is never sent to the Hub as a repository id); returns `name`."""
    if os.path.exists(os.path.expanduser(name)):
        if not os.path.isdir(os.path.expanduser(name)):
            raise NotADirectoryError(f"{name!r} is a file; pass the model directory that holds config.json.")
        return name
    if looks_like_local_path(name):
        raise FileNotFoundError(
            f"Model directory {name!r} does not exist. Check the path (a Hub model id looks like 'owner/name')."
        )
    return name
