"""Option values and messages of a user interface: values checked by the engine's checks (messages that
name the option and its range), messages stripped of server paths."""
from __future__ import annotations

import re

from retree_core.config import bounded_number, whole_number  # the one check of option values

PATH_IN_MESSAGE = re.compile(r"(?<![\w.~])(?:/[^\s/:'\"]+)+/([^\s/:'\"]+)")  # absolute paths


def readable(exc: BaseException | str) -> str:
    """An exception (or a message) for people: server folders stripped from paths, the file names kept."""
    text = str(exc)
    return PATH_IN_MESSAGE.sub(r"\1", text) or (type(exc).__name__ if isinstance(exc, BaseException) else "")


__all__ = ["readable", "whole_number", "bounded_number"]
