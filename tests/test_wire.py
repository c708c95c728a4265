"""The committed stubs match protos/, and requests/responses convert both ways."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from google.protobuf import descriptor_pb2

from splitrt.models import FrameMeta
from splitrt.wire import kserve_v2_pb2 as pb
from splitrt.wire import protocol
from splitrt.wire.protocol import WireError, build_request, build_response, parse_request, parse_response

ROOT = Path(__file__).resolve().parents[1]


def test_committed_stubs_match_the_proto(tmp_path):
    out = tmp_path / "descriptor.pb"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{ROOT / 'protos'}",
            f"--descriptor_set_out={out}",
            "splitrt/wire/kserve_v2.proto",
        ],
        check=True,
    )
    fresh = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file[0]
    committed = descriptor_pb2.FileDescriptorProto.FromString(pb.DESCRIPTOR.serialized_pb)
    for message in _all_messages(fresh.message_type):  # protoc adds json_name; embedded stubs omit it
        for field in message.field:
            field.ClearField("json_name")
    assert fresh == committed, "protos/ changed: run `make proto` and commit the stubs"


def _all_messages(messages):
    for message in messages:
        yield message
        yield from _all_messages(message.nested_type)


def test_wire_names_follow_the_kserve_v2_spec():
    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert service.full_name == "inference.GRPCInferenceService"
    assert {m.name for m in service.methods} >= {
        "ServerLive",
        "ServerReady",
        "ModelReady",
        "ServerMetadata",
        "ModelMetadata",
        "ModelInfer",
        "ModelStreamInfer",
    }
    fields = {f.name: f.number for f in pb.ModelInferRequest.DESCRIPTOR.fields}
    assert fields == {
        "model_name": 1,
        "model_version": 2,
        "id": 3,
        "parameters": 4,
        "inputs": 5,
        "outputs": 6,
        "raw_input_contents": 7,
    }
    assert {f.name: f.number for f in pb.ModelStreamInferResponse.DESCRIPTOR.fields} == {
        "error_message": 1,
        "infer_response": 2,
    }


def test_our_parameters_avoid_tritons_reserved_names():
    reserved = {"priority", "timeout", "sequence_start", "sequence_end", "headers"}
    ours = [v for k, v in vars(protocol).items() if k.isupper() and isinstance(v, str) and v.startswith("splitrt.")]
    assert ours and not (set(ours) & reserved)
    assert all(not name.startswith("triton_") for name in ours)


META = FrameMeta((240, 320), (160, 213), (160, 224))


def test_request_round_trip():
    request = build_request("det", 7, b"\x01\x02\x03", "int8-zstd", "layer1", META, "abcd", session_id=42)
    request = pb.ModelInferRequest.FromString(request.SerializeToString())
    frame = parse_request(request)
    assert (frame.model, frame.frame_id, frame.payload, frame.codec, frame.split) == (
        "det",
        "7",
        b"\x01\x02\x03",
        "int8-zstd",
        "layer1",
    )
    assert frame.meta == META and frame.fingerprint == "abcd"
    assert request.parameters["sequence_id"].int64_param == 42


def test_plain_client_request_means_full_offload():
    request = pb.ModelInferRequest(model_name="det", id="1")
    request.inputs.add(name="IMAGE", datatype="UINT8", shape=[4])
    request.raw_input_contents.append(b"\xff\xd8\xff\xe0")
    frame = parse_request(request)
    assert frame.split == "input" and frame.codec == "image" and frame.meta is None


def _good() -> pb.ModelInferRequest:
    return build_request("det", 1, b"abcd", "fp32", "layer1", META, "f")


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda r: r.ClearField("model_name"), "names no model"),
        (lambda r: r.inputs.add(name="extra", datatype="UINT8", shape=[1]), "exactly one input"),
        (lambda r: setattr(r.inputs[0], "datatype", "FP32"), "UINT8"),
        (lambda r: r.ClearField("raw_input_contents"), "raw_input_contents"),
        (lambda r: r.inputs[0].shape.__setitem__(0, 99), "does not match"),
        (lambda r: r.parameters["splitrt.split"].ClearField("string_param"), "must both be strings"),
        (lambda r: r.parameters.__delitem__("splitrt.batch_height"), "missing frame parameters"),
        (lambda r: setattr(r.parameters["splitrt.original_width"], "int64_param", -3), "1..65535"),
        (lambda r: setattr(r.parameters["splitrt.resized_height"], "int64_param", 999), "does not fit"),
    ],
)
def test_malformed_requests_name_the_problem(mutate, message):
    request = _good()
    mutate(request)
    with pytest.raises(WireError, match=message):
        parse_request(request)


def test_response_round_trip():
    outputs = {"boxes": torch.rand(3, 4), "scores": torch.rand(3), "labels": torch.tensor([1, 2, 3])}
    response = build_response("det", "5", outputs, {protocol.TAIL_US: 1234})
    arrays, params = parse_response(pb.ModelInferResponse.FromString(response.SerializeToString()))
    assert arrays["boxes"].shape == (3, 4) and arrays["labels"].dtype.kind == "i"
    assert torch.equal(torch.from_numpy(arrays["labels"].copy()), outputs["labels"])
    assert params[protocol.TAIL_US] == 1234
