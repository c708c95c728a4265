"""The hindsight oracle: dynamic programming over the edge's and the link's queue state.

The state after a frame is (when the device is free, when the link is free,
mAP in time so far).  With hindsight of the link and the byte draws, every
frame's outcome under each choice is known exactly (``Simulator.play``).
One state dominates another when it is free no later on both queues and has
scored at least as much: every later frame can then do at least as well
(start times, link finish times and hits are all monotone in the two free
times), so dominated states are dropped without loss.

Choices searched per frame: skip, every local configuration that finishes
in time, every remote configuration whose answer comes in time.  Nothing
else can help: a late local run or a late unhedged answer scores 0 and
occupies the device (skip dominates), and a late hedged frame scores its
local model's mAP while occupying both queues longer than running that
local model alone.  The search is therefore exact over every policy the
simulator can play, hedged or not, except for a bounded frontier: at most
``width`` states are kept per frame (highest scores first).  To keep the
result a proven upper bound on the policies in the same table whatever the
bound, the states each of those policies actually passed through are put
into the frontier too (they are reachable, so the oracle stays honest),
and the oracle's plan is replayed through the simulator at the end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .simulate import RunResult, Simulator

EPS = 1e-9
DEFAULT_WIDTH = 24


@dataclass
class _Node:
    """One state of the frontier; ``parent`` and ``plan`` chain back to frame 0."""

    edge_free: float
    link_free: float
    score: float
    parent: _Node | None
    plan: object  # a Plan, or ("policy", name, index) for a state taken from a policy's own run

    def dominates(self, other: _Node) -> bool:
        return (
            self.score >= other.score - EPS
            and self.edge_free <= other.edge_free + EPS
            and self.link_free <= other.link_free + EPS
        )


def oracle_run(sim: Simulator, protect: dict[str, RunResult] | None = None, width: int = DEFAULT_WIDTH) -> RunResult:
    """The best plan in hindsight, replayed: accuracy in time >= every run in ``protect``."""
    from .simulate import Plan

    protect = protect or {}
    locals_ = [c for c in sim.s.profile.configs if not c.config.remote]
    remotes = [c for c in sim.s.profile.configs if c.config.remote]
    frontier = [_Node(0.0, 0.0, 0.0, None, None)]
    for index in range(sim.frames):
        candidates: list[_Node] = []
        for node in frontier:
            skip = Plan(None)
            out = sim.play(index, node.edge_free, node.link_free, skip)
            candidates.append(_Node(out.done, out.link_free, node.score, node, skip))
            for entry in (*locals_, *remotes):
                plan = Plan(entry.name)
                out = sim.play(index, node.edge_free, node.link_free, plan)
                if out.hit:
                    candidates.append(_Node(out.done, out.link_free, node.score + out.accuracy_in_time, node, plan))
        protected = [_Node(*run.states[index], None, ("policy", name, index)) for name, run in protect.items()]
        frontier = _prune(candidates, protected, width)
    best = max(frontier, key=lambda n: n.score)
    return sim.replay("oracle", _plans(best, protect))


def _prune(candidates: list[_Node], protected: list[_Node], width: int) -> list[_Node]:
    candidates.sort(key=lambda n: (-n.score, n.edge_free, n.link_free))
    kept: list[_Node] = []
    for node in candidates:
        if len(kept) >= width:
            break
        if not any(k.dominates(node) for k in kept):
            kept.append(node)
    for node in protected:  # a policy's own state stays reachable whatever the bound cut
        if not any(k.dominates(node) for k in kept):
            kept.append(node)
    return kept


def _plans(node: _Node, protect: dict[str, RunResult]) -> list:
    tail = []
    while node is not None and node.plan is not None:
        if isinstance(node.plan, tuple):  # this state is a policy's after its frame `index`
            _, name, index = node.plan
            return protect[name].plans[: index + 1] + tail[::-1]
        tail.append(node.plan)
        node = node.parent
    return tail[::-1]
