"""Output files that a failed run cannot destroy, and progress bars that stay out of piped logs."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm


class ResultsFile:
    """JSON lines, flushed line by line (``tail -f`` works), created only with the run's first result.

    A run that ends before its first result (server not ready, bad source, stopped at once)
    leaves an earlier ``PATH`` exactly as it was.  A run with results moves an earlier file to
    ``PATH.prev`` before writing, so the previous run's results survive one more run
    whatever happens to this one.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.previous = self.path.with_name(self.path.name + ".prev")
        self.lines = 0
        self._file: TextIO | None = None

    def open(self) -> ResultsFile:
        """Check now that the results can be written (the folder is made), so a bad path fails before the run."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_dir():
            raise IsADirectoryError(f"{self.path} is a folder")
        if not os.access(self.path.parent, os.W_OK) or (self.path.exists() and not os.access(self.path, os.W_OK)):
            raise PermissionError(f"{self.path} is not writable")
        return self

    def write(self, record: dict[str, Any]) -> None:
        if self._file is None:
            if self.path.exists():
                os.replace(self.path, self.previous)
            self._file = self.path.open("w")
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        self.lines += 1

    def close(self) -> bool:
        """True if ``path`` now holds this run's results."""
        if self._file is not None:
            self._file.close()
            self._file = None
        return self.lines > 0

    def __enter__(self) -> ResultsFile:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress_bar(iterable: Any = None, enabled: bool = True, **kwargs: Any) -> tqdm:
    """A tqdm bar on stderr, or none when stderr is not a terminal (a pipe or a log file would
    fill with carriage returns and escape codes); iterating it still yields every item."""
    kwargs.setdefault("file", sys.stderr)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, disable=not (enabled and _is_terminal(kwargs["file"])), **kwargs)


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
