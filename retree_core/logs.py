"""How the engine reports: messages through `logging` (the "retree_core" logger, silent until an application
configures it, as the command line does) and tqdm progress bars that show on a terminal only."""
from __future__ import annotations

import logging

from tqdm import tqdm

log = logging.getLogger("retree_core")
log.addHandler(logging.NullHandler())
LEVELS = {-1: logging.WARNING, 0: logging.INFO, 1: logging.DEBUG}


def configure(verbosity: int = 0) -> None:
    """The command line's reporting: messages on stderr at INFO; verbosity 1 (--verbose) adds DEBUG, -1
    (--quiet) keeps warnings and errors only."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.handlers = [h for h in log.handlers if isinstance(h, logging.NullHandler)] + [handler]
    log.setLevel(LEVELS[max(-1, min(1, verbosity))])
    log.propagate = False


def progress_bar(total: int, desc: str, enabled: bool = True, unit: str = "image") -> tqdm:
    """A bar on stderr when `enabled` and stderr is a terminal (tqdm's disable=None), else a silent counter."""
    return tqdm(total=total, desc=desc, unit=unit, disable=None if enabled else True, dynamic_ncols=True, leave=False)


__all__ = ["configure", "log", "progress_bar"]
