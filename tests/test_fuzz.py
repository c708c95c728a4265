"""Property-based fuzzing of the server's request and decode path: no crash, no hang, a proper status."""

from __future__ import annotations

import grpc
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from splitrt.codecs import get_codec
from splitrt.wire import kserve_v2_pb2 as pb
from splitrt.wire import kserve_v2_pb2_grpc as pb_grpc
from splitrt.wire import protocol

ALLOWED = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.RESOURCE_EXHAUSTED}
FRAME_SIZE_KEYS = (
    protocol.ORIGINAL_H,
    protocol.ORIGINAL_W,
    protocol.RESIZED_H,
    protocol.RESIZED_W,
    protocol.BATCH_H,
    protocol.BATCH_W,
)
PARAM_KEYS = [protocol.CODEC, protocol.SPLIT, protocol.FINGERPRINT, *FRAME_SIZE_KEYS, "sequence_id", "splitrt.other"]
CODECS = ["fp32", "fp16-zstd", "int8", "int8-zstd", "jpeg", "png", "raw", "local", "entropy", "nonsense"]
SPLITS = ["input", "features.3", "fpn", "layer1", "layer2", "pool", "nope", ""]


def _valid_payloads() -> list[bytes]:
    g = torch.Generator().manual_seed(0)
    features = {"x": torch.rand(1, 24, 40, 53, generator=g)}
    payloads = [get_codec(c).encode(features) for c in ("fp32", "fp16-zstd", "int8", "int8-zstd")]
    payloads.append(get_codec("png").encode({"image": torch.rand(1, 3, 20, 30, generator=g)}))
    return payloads


VALID = _valid_payloads()

param_values = st.one_of(
    st.integers(min_value=-(2**40), max_value=2**40),
    st.text(max_size=20),
    st.sampled_from(CODECS + SPLITS),
    st.booleans(),
    st.floats(allow_nan=True),
)


@st.composite
def payloads(draw) -> bytes:
    kind = draw(st.sampled_from(["random", "mutated", "truncated", "valid"]))
    if kind == "random":
        return draw(st.binary(max_size=2048))
    base = bytearray(draw(st.sampled_from(VALID)))
    if kind == "truncated":
        return bytes(base[: draw(st.integers(min_value=0, max_value=len(base)))])
    if kind == "mutated":
        for _ in range(draw(st.integers(min_value=1, max_value=8))):
            base[draw(st.integers(min_value=0, max_value=len(base) - 1))] = draw(st.integers(0, 255))
    return bytes(base)


@st.composite
def requests(draw) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(
        model_name=draw(st.sampled_from(["det", "cls", "", "nope"])), id=draw(st.text(max_size=8))
    )
    for _ in range(draw(st.integers(min_value=0, max_value=2))):
        payload = draw(payloads())
        shape = draw(st.one_of(st.just([len(payload)]), st.lists(st.integers(-5, 10**7), max_size=3)))
        request.inputs.add(name="P", datatype=draw(st.sampled_from(["UINT8", "FP32", "BYTES", "x"])), shape=shape)
        request.raw_input_contents.append(payload)
    if draw(st.booleans()):  # a realistic splitrt envelope, then perturbed
        request.parameters[protocol.CODEC].string_param = draw(st.sampled_from(CODECS))
        request.parameters[protocol.SPLIT].string_param = draw(st.sampled_from(SPLITS))
        for key, value in zip(
            FRAME_SIZE_KEYS,
            (120, 160, draw(st.integers(1, 400)), draw(st.integers(1, 400)), draw(st.integers(1, 500)), 224),
        ):
            request.parameters[key].int64_param = value
    for key in draw(st.lists(st.sampled_from(PARAM_KEYS), max_size=4)):
        value = draw(param_values)
        param = request.parameters[key]
        if isinstance(value, bool):
            param.bool_param = value
        elif isinstance(value, int):
            param.int64_param = value
        elif isinstance(value, float):
            param.double_param = value
        else:
            param.string_param = value
    return request


@pytest.fixture(scope="module")
def fuzz_stub(server):
    channel = grpc.insecure_channel(server.address)
    yield pb_grpc.GRPCInferenceServiceStub(channel)
    channel.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request=requests())
def test_random_requests_get_a_proper_status(fuzz_stub, request):
    try:
        reply = fuzz_stub.ModelInfer(request, timeout=30)
    except grpc.RpcError as exc:
        assert exc.code() in ALLOWED, (exc.code(), exc.details())
        assert exc.details(), "every refusal says why"
        return
    assert reply.outputs and len(reply.raw_output_contents) == len(reply.outputs)


def test_server_survives_the_fuzzing(fuzz_stub, server):
    assert fuzz_stub.ServerLive(pb.ServerLiveRequest(), timeout=10).live
    assert server.proc.poll() is None


def test_coverage_guided_fuzzing_of_every_decoder_finds_no_crash(tmp_path):
    """A short atheris run of each decoder in its own subprocess (``splitrt bench fuzz`` runs long ones),
    two at a time: each is one core's work, and most of a short run is the subprocess starting up."""
    from concurrent.futures import ThreadPoolExecutor

    from splitrt.bench.fuzz import TARGETS, run_target

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda target: run_target(target, 4, tmp_path / target), TARGETS))
    for result in results:
        assert result["exit_code"] == 0 and not result["crashes"], (result, open(result["log"]).read()[-3000:])
        assert result["executions"], result
