"""How many threads torch may use: one policy for the server, the edge and profiling.

torch sizes its intra-op pool from the machine's cores, whoever else runs there.  A server
with several tail instances, or an edge and a server sharing a machine, then run more
compute threads than there are cores, and every frame waits for the others (on 2 cores the
default doubled the tail's time).  The policy:

* the cores this process may use are its CPU affinity, capped by a cgroup CPU quota;
* a server keeps one core for what runs beside the tails (gRPC, the event loop, decoding) and
  shares the others equally among its tail instances;
* an edge gives its head every core, or half of them when its server is on the same machine
  and frames are pipelined (both then compute at once);
* torch's inter-op pool gets one thread (splitrt runs one model call per worker thread);
* ``threads=0`` leaves torch's own default (what splitrt did before this policy).
"""

from __future__ import annotations

import os
from pathlib import Path

#: The value of ``--threads`` that keeps torch's own default.
TORCH_DEFAULT = 0


def available_cores() -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup v2 CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    quota = _cgroup_quota()
    return max(1, min(cores, quota)) if quota else max(1, cores)


def _cgroup_quota() -> int | None:
    try:
        limit, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if limit == "max":
        return None
    return max(1, int(int(limit) / int(period)))


def server_threads(instances: int = 1, cores: int | None = None) -> int:
    """Intra-op threads for each of a server's ``instances`` tail workers.

    One core stays for everything else a server does per frame (gRPC, the event loop,
    decoding); the rest is shared equally by the instances.
    """
    cores = cores or available_cores()
    return max(1, (cores - 1) // max(1, instances))


def edge_threads(server: str | None = None, in_flight: int = 1, cores: int | None = None) -> int:
    """Intra-op threads of an edge's head.

    Every core, unless its server shares this machine (a loopback address) and frames are
    pipelined (``in_flight`` > 1): then head and tail compute at the same time and the head
    takes half of the cores.  With one frame at a time they take turns, and each may use all.
    """
    cores = cores or available_cores()
    shared = server is not None and is_loopback_target(server)
    return max(1, cores // 2) if shared and in_flight > 1 else cores


def is_loopback_target(target: str) -> bool:
    """Whether a gRPC target (``host:port``, ``[::1]:port``, ``dns:///host:port``) names this machine."""
    host = target.split("///")[-1]
    host = host[1 : host.index("]")] if host.startswith("[") and "]" in host else host.rsplit(":", 1)[0]
    return host in ("localhost", "::1") or host.startswith("127.")


def apply_threads(threads: int | None, default: int | None = None) -> int:
    """Set torch's thread pools; ``None`` takes ``default`` (else every core), 0 keeps torch's own.

    Returns the intra-op thread count now in force.
    """
    import torch

    if threads is not None and threads < 0:
        raise ValueError(f"threads must be >= 0 (0 keeps torch's default), not {threads}")
    if threads == TORCH_DEFAULT:
        return torch.get_num_threads()
    count = threads if threads is not None else (default if default is not None else available_cores())
    torch.set_num_threads(count)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set, or inter-op work already ran: only settable once per process
        pass
    return torch.get_num_threads()
