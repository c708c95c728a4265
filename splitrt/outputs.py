"""Output files that a failed run cannot destroy, and progress bars that stay out of piped logs."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm


class ResultsFile:
    """JSON lines written to ``PATH.partial`` and moved over ``PATH`` once the run has results.

    A run that ends before its first result (server not ready, bad source, stopped at once)
    leaves an earlier ``PATH`` as it was; one that produced results replaces it, even if it
    stopped early (those results are the run's).  Lines are flushed as they come, so a run
    killed outright still leaves them in ``PATH.partial``.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.lines = 0
        self._file: TextIO | None = None

    def open(self) -> ResultsFile:
        """Create the folder and the partial file now, so that an unwritable place fails before the run."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.partial.open("w")
        return self

    def write(self, record: dict[str, Any]) -> None:
        assert self._file is not None, "open() first"
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        self.lines += 1

    def close(self) -> bool:
        """Finish the file; True if ``path`` now holds this run's results."""
        if self._file is None:
            return False
        self._file.close()
        self._file = None
        if self.lines:
            os.replace(self.partial, self.path)
            return True
        self.partial.unlink(missing_ok=True)
        return False

    def __enter__(self) -> ResultsFile:
        return self.open() if self._file is None else self

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
