"""Fair admission: bounded queues, immediate refusal when full, round-robin turns between clients."""

from __future__ import annotations

import asyncio

import pytest

from splitrt.server.admission import AdmissionLimits, FairQueue, Overloaded, ServerBudget
from splitrt.server.security import RateLimiter


def test_turns_go_round_robin_and_full_queues_refuse_at_once():
    async def scenario():
        limits = AdmissionLimits(concurrency=1, max_queued=6, max_queued_per_client=4, max_total=100)
        queue = FairQueue("m", limits, ServerBudget(limits.max_total))
        order: list[str] = []
        gate = asyncio.Event()

        async def frame(client: str):
            async with queue.slot(client):
                order.append(client)
                await gate.wait()

        first = asyncio.create_task(frame("flooder"))
        await asyncio.sleep(0)
        tasks = [asyncio.create_task(frame("flooder")) for _ in range(4)]
        await asyncio.sleep(0)
        with pytest.raises(Overloaded, match="per-client limit"):
            await queue.enter("flooder")
        tasks += [asyncio.create_task(frame("victim")) for _ in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(Overloaded, match="--max-queue"):
            await queue.enter("third")
        assert queue.saturated
        gate.set()
        await asyncio.gather(first, *tasks)
        return order, queue

    order, queue = asyncio.run(scenario())
    # The victim's frames are served between the flooder's, not after all of them.
    assert order[:4] == ["flooder", "flooder", "victim", "flooder"]
    assert queue.running == 0 and queue.queued == 0 and queue.budget.admitted == 0


def test_a_cancelled_waiter_gives_its_place_back():
    async def scenario():
        limits = AdmissionLimits(concurrency=1)
        queue = FairQueue("m", limits, ServerBudget(10))
        gate = asyncio.Event()

        async def frame(client):
            async with queue.slot(client):
                await gate.wait()

        running = asyncio.create_task(frame("a"))
        await asyncio.sleep(0)
        waiting = asyncio.create_task(frame("b"))
        await asyncio.sleep(0)
        waiting.cancel()
        await asyncio.sleep(0)
        gate.set()
        await running
        return queue

    queue = asyncio.run(scenario())
    assert queue.running == queue.queued == queue.budget.admitted == 0


def test_the_server_wide_budget_refuses_every_model():
    async def scenario():
        budget = ServerBudget(1)
        first, second = FairQueue("a", AdmissionLimits(), budget), FairQueue("b", AdmissionLimits(), budget)
        await first.enter("c")
        with pytest.raises(Overloaded, match="max-queued-total"):
            await second.enter("c")

    asyncio.run(scenario())


def test_rate_limiter_table_is_bounded():
    limiter = RateLimiter(1.0, max_clients=100)
    for index in range(1000):
        limiter.allow(f"client-{index}")
    assert len(limiter) == 100


def test_a_model_still_loading_answers_unavailable_not_unknown():
    """A restarted server is live before its models load: their frames are told to come back, not 'unknown'."""
    import grpc

    from splitrt.server.repository import ModelRepository
    from splitrt.server.service import InferenceService, RequestError
    from splitrt.wire import kserve_v2_pb2 as pb

    repository = ModelRepository()
    repository.loading = {"cls"}
    service = InferenceService(repository, "cpu")

    async def refusal(name: str) -> RequestError:
        with pytest.raises(RequestError) as caught:
            await service._infer(pb.ModelInferRequest(model_name=name, id="f"), "client")
        return caught.value

    loading, unknown = asyncio.run(refusal("cls")), asyncio.run(refusal("other"))
    assert loading.code == grpc.StatusCode.UNAVAILABLE and "still loading" in loading.message
    assert unknown.code == grpc.StatusCode.NOT_FOUND
