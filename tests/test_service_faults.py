"""Inside the server: a fault in a frame's tail or in its decoding is reported for what it is."""

from __future__ import annotations

import asyncio
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


def test_a_failing_tail_is_internal_and_the_decoded_frame_is_counted(service_and_request, monkeypatch):
    service, served, request = service_and_request

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
