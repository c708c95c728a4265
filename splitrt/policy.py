"""The edge's timing rules, shared by the live edge and the simulator so that both play by one book.

The simulator predicts what the live edge does; every constant and rule that decides when
the live edge stops waiting, hands over, or probes lives here, and both import it.
"""

from __future__ import annotations

PROBE_BYTES = 200  # a link probe with its gRPC framing
PROBE_TIMEOUT_S = 1.0  # a probe unanswered this long measured nothing
HAND_OVER_S = 0.003  # a hedged frame stops waiting this long before its deadline, to deliver in time
LATE_ANSWER_S = 1.0  # how long the edge keeps listening for the answer of a frame it gave up on


def give_up_instant(captured: float, sent: float, deadline: float, fallback_s: float | None) -> float:
    """When an unhedged edge stops waiting for the server.

    With a fallback that still fits: the latest instant it can start and finish by the
    deadline (not before the frame is sent).  Without one: the deadline itself.
    """
    if fallback_s is None or captured + deadline - fallback_s < sent:
        return max(sent, captured + deadline)
    return captured + deadline - fallback_s
