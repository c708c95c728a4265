"""CPU contention for experiments: other processes burning cores next to the edge.

Each worker is a separate process that spins for ``duty`` of every 10 ms
slice and sleeps the rest, so the head's measured time grows the way it
does on a shared device (which the device-load estimate should notice).
"""

from __future__ import annotations

import multiprocessing as mp
import time
from types import TracebackType

SLICE_S = 0.01


def _burn(duty: float, stop: mp.Event) -> None:
    busy = SLICE_S * duty
    while not stop.is_set():
        began = time.perf_counter()
        while time.perf_counter() - began < busy:
            pass
        rest = SLICE_S - busy
        if rest > 0:
            time.sleep(rest)


class CpuContention:
    """``with CpuContention(workers=2, duty=1.0): ...`` burns two cores while the block runs."""

    def __init__(self, workers: int = 1, duty: float = 1.0) -> None:
        if workers < 1:
            raise ValueError("contention needs at least one worker")
        if not 0.0 < duty <= 1.0:
            raise ValueError("duty must be in (0, 1]")
        self.workers = workers
        self.duty = duty
        self._context = mp.get_context("spawn")
        self._stop = self._context.Event()
        self._processes: list[mp.Process] = []

    def start(self) -> CpuContention:
        for _ in range(self.workers):
            process = self._context.Process(target=_burn, args=(self.duty, self._stop), daemon=True)
            process.start()
            self._processes.append(process)
        return self

    def stop(self) -> None:
        self._stop.set()
        for process in self._processes:
            process.join(timeout=2.0)
            if process.is_alive():
                process.kill()
        self._processes.clear()

    @property
    def running(self) -> bool:
        return any(p.is_alive() for p in self._processes)

    def __enter__(self) -> CpuContention:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
