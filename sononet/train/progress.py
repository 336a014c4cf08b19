"""Training progress a user can follow: each unit's log lines in ``<model>/train.log``, echoed by the parent.

``train-all`` trains its fold x model units in worker processes, whose logging goes nowhere by
default; :func:`logged` runs a unit with a log file in its model folder (appended, so a resumed
unit continues it) and :class:`LogTail` lets the parent print each unit's new lines as they come::

    run_unit = functools.partial(logged, functools.partial(train_unit, ...))
    tails = [(unit, LogTail(Path(unit.model_dir) / LOG_FILE)) for unit in units]
    ...
    for unit, tail in tails:
        for line in tail.lines():
            log.info("%s: %s", unit.stage, line)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
LOG_FILE = "train.log"
_FORMAT = "%(asctime)s %(levelname)s %(message)s"  # LogTail strips the first three fields


@contextmanager
def unit_log(model_dir: str | Path) -> Iterator[Path]:
    """Copy the package's log records (INFO and up) into ``model_dir/train.log`` for the ``with`` block."""
    path = Path(model_dir) / LOG_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(_FORMAT))
    handler.setLevel(logging.INFO)
    logger = logging.getLogger("sononet")
    level = logger.level
    if logger.getEffectiveLevel() > logging.INFO:  # a spawned worker has no logging set up
        logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield path
    finally:
        logger.removeHandler(handler)
        handler.close()
        logger.setLevel(level)


def logged(run: Callable[..., T], unit: Any, **kwargs: Any) -> T:
    """``run(unit, **kwargs)`` with the unit's log file open; picklable, for worker processes."""
    with unit_log(unit.model_dir):
        return run(unit, **kwargs)


class LogTail:
    """The lines a log file gained since the last call, starting from where it ended when watched."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size if path.is_file() else 0  # a resumed unit's old lines are not news

    def lines(self) -> list[str]:
        """New complete lines, each without its timestamp and level."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        complete = data[: data.rfind(b"\n") + 1]
        self.offset += len(complete)
        return [_message(line) for line in complete.decode("utf-8", errors="replace").splitlines() if line]


def _message(line: str) -> str:
    parts = line.split(" ", 3)  # date, time, level, message
    return parts[3] if len(parts) == 4 else line
