"""Inside the server: a fault in a frame's tail or in its decoding is reported for what it is."""

from __future__ import annotations

import asyncio
import threading
import time

import grpc
import pytest
import torch

from splitrt.codecs import get_codec
from splitrt.server.repository import ModelRepository, RequestError, ServedModel
from splitrt.server.service import InferenceService
from splitrt.wire.protocol import build_request

from .conftest import TINY_CLASSIFIER


@pytest.fixture
def service_and_request():
    repository = ModelRepository()
    served = ServedModel(TINY_CLASSIFIER)
    repository._models[served.name] = served
    service = InferenceService(repository, "cpu")
    image = torch.rand(3, 64, 64)
    with torch.inference_mode():
        features, meta = served.model.head(image, "input")
    payload = get_codec("png").encode(features)
    request = build_request(served.name, 1, payload, "png", "input", meta, served.fingerprint)
    yield service, served, request
    served.close()


def _requests_counted(service: InferenceService) -> float:
    return sum(s.value for m in service.metrics.requests.collect() for s in m.samples if s.name.endswith("_total"))


@pytest.mark.parametrize("inline", [False, True], ids=["on a worker", "on the event loop"])
def test_a_failing_tail_is_internal_and_the_decoded_frame_is_counted(service_and_request, monkeypatch, inline):
    service, served, request = service_and_request
    served.recent_job_s = 0.001 if inline else None

    def broken_tail(*args):
        raise RuntimeError("out of memory, say")

    monkeypatch.setattr(served.model, "tail", broken_tail)
    with pytest.raises(RequestError) as refused:
        asyncio.run(service._run(request, served, time.perf_counter_ns()))
    assert refused.value.code == grpc.StatusCode.INTERNAL and "tail failed: out of memory" in refused.value.message
    assert _requests_counted(service) == 1


def test_a_fault_while_decoding_is_not_called_a_tail_failure(service_and_request, monkeypatch):
    service, served, request = service_and_request

    def broken_decode(frame):
        raise RuntimeError("decoder bug")

    monkeypatch.setattr(served, "decode", broken_decode)
    with pytest.raises(RuntimeError, match="decoder bug"):  # _refusal answers it INTERNAL with its type
        asyncio.run(service._run(request, served, time.perf_counter_ns()))
    assert _requests_counted(service) == 0


# "Short enough" is generous here: on a loaded CI machine the tiny model's frame can take longer than
# the server's default 50 ms, and what is under test is the mechanism, not that threshold.
@pytest.mark.parametrize("inline_ms, on_loop", [(10_000.0, True), (0.0, False)], ids=["inline", "inline off"])
def test_with_one_instance_short_frames_run_on_the_event_loop(service_and_request, monkeypatch, inline_ms, on_loop):
    """The first frame (cost unknown) runs on a worker; later ones on the loop when short enough."""
    _, served, request = service_and_request
    service = InferenceService(served_repository(served), "cpu", inline_job_ms=inline_ms)
    ran_on: list[int] = []
    tail = served.model.tail

    def recording_tail(*args):
        ran_on.append(threading.get_ident())
        return tail(*args)

    monkeypatch.setattr(served.model, "tail", recording_tail)

    async def three_frames() -> int:
        for _ in range(3):
            response = await service._run(request, served, time.perf_counter_ns())
            assert response.outputs
        return threading.get_ident()

    loop_thread = asyncio.run(three_frames())
    assert ran_on[0] != loop_thread
    assert [t == loop_thread for t in ran_on[1:]] == [on_loop, on_loop]


def served_repository(served: ServedModel) -> ModelRepository:
    repository = ModelRepository()
    repository._models[served.name] = served
    return repository
