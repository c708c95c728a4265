"""Request/response conversion and the parameter names splitrt puts on the wire.

Everything splitrt adds lives under the ``splitrt.`` prefix so that it never
collides with Triton's reserved parameters.  A request without ``splitrt.``
parameters is treated as a plain client's full-offload call: one UINT8 tensor
holding an encoded image (JPEG, PNG, WebP).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..models.base import INPUT_SPLIT, FrameMeta
from . import kserve_v2_pb2 as pb

PREFIX = "splitrt."
CODEC = PREFIX + "codec"
SPLIT = PREFIX + "split"
FINGERPRINT = PREFIX + "fingerprint"
WIDTH = PREFIX + "width"
ORIGINAL_H, ORIGINAL_W = PREFIX + "original_height", PREFIX + "original_width"
RESIZED_H, RESIZED_W = PREFIX + "resized_height", PREFIX + "resized_width"
BATCH_H, BATCH_W = PREFIX + "batch_height", PREFIX + "batch_width"
DECODE_US, QUEUE_US, TAIL_US = PREFIX + "decode_us", PREFIX + "queue_us", PREFIX + "tail_us"
#: How many frames shared the tail call that answered this one (1 without batching).
BATCH_SIZE = PREFIX + "batch_size"
SESSION = "sequence_id"
#: A link probe: padding the server answers at once, without decoding or running anything.
PROBE = PREFIX + "probe"

#: Name of the single input tensor splitrt sends; a plain client may use any name.
PAYLOAD_INPUT = "PAYLOAD"
#: Codec assumed for plain (non-splitrt) clients: any image format PIL can read.
PLAIN_CLIENT_CODEC = "image"

_DATATYPES = {torch.float32: ("FP32", "<f4"), torch.int64: ("INT64", "<i8"), torch.uint8: ("UINT8", "u1")}
_NUMPY_OF = {name: np.dtype(code) for name, code in _DATATYPES.values()}


class WireError(ValueError):
    """A request or response that does not follow the protocol."""


@dataclass
class FrameRequest:
    """A decoded-from-the-wire request, before its payload is decoded."""

    model: str
    frame_id: str
    payload: bytes
    codec: str
    split: str
    meta: FrameMeta | None
    fingerprint: str | None
    width: float | None = None


def _param_value(p: pb.InferParameter) -> object:
    kind = p.WhichOneof("parameter_choice")
    return getattr(p, kind) if kind else None


def _set_param(params, key: str, value: object) -> None:  # params: protobuf map
    if isinstance(value, bool):
        params[key].bool_param = value
    elif isinstance(value, int):
        params[key].int64_param = value
    elif isinstance(value, float):
        params[key].double_param = value
    else:
        params[key].string_param = str(value)


def read_params(params) -> dict[str, object]:
    return {k: _param_value(v) for k, v in params.items()}


def build_request(
    model: str,
    frame_id: int | str,
    payload: bytes,
    codec: str,
    split: str,
    meta: FrameMeta,
    fingerprint: str,
    session_id: int | None = None,
    width: float | None = None,
) -> pb.ModelInferRequest:
    request = _payload_request(model, str(frame_id), payload)
    values: dict[str, object] = {
        CODEC: codec,
        SPLIT: split,
        FINGERPRINT: fingerprint,
        ORIGINAL_H: meta.original_size[0],
        ORIGINAL_W: meta.original_size[1],
        RESIZED_H: meta.resized_size[0],
        RESIZED_W: meta.resized_size[1],
        BATCH_H: meta.batch_size_hw[0],
        BATCH_W: meta.batch_size_hw[1],
    }
    if session_id is not None:
        values[SESSION] = session_id
    if width is not None:
        values[WIDTH] = float(width)
    for key, value in values.items():
        _set_param(request.parameters, key, value)
    return request


def _payload_request(model: str, request_id: str, payload: bytes) -> pb.ModelInferRequest:
    """A request carrying ``payload`` as its one UINT8 input, shaped [1, N]: a batch of one,
    so batching servers (Triton with max_batch_size > 0) take it too."""
    request = pb.ModelInferRequest(model_name=model, id=request_id)
    tensor = request.inputs.add()
    tensor.name, tensor.datatype = PAYLOAD_INPUT, "UINT8"
    tensor.shape.extend([1, len(payload)])
    request.raw_input_contents.append(payload)
    return request


def build_probe(model: str, probe_id: str, padding: int) -> pb.ModelInferRequest:
    """A request that measures the link: ``padding`` bytes the server discards and answers at once."""
    request = _payload_request(model, probe_id, bytes(padding))
    _set_param(request.parameters, PROBE, True)
    return request


def is_probe(request: pb.ModelInferRequest) -> bool:
    return PROBE in request.parameters and _param_value(request.parameters[PROBE]) is True


def parse_request(request: pb.ModelInferRequest) -> FrameRequest:
    """Validate the envelope of a one-frame request; the payload itself is decoded later by its codec."""
    frames = parse_request_frames(request)
    if len(frames) != 1:
        raise WireError(f"expected one frame, got a batch of {len(frames)}")
    return frames[0]


def parse_request_frames(request: pb.ModelInferRequest) -> list[FrameRequest]:
    """The frames of a request: one splitrt frame, or a plain client's image or batch of images.

    A plain client (no ``splitrt.`` parameters) may send, as KServe v2 allows: UINT8 ``[N]`` or
    ``[1, N]`` (one encoded image), UINT8 ``[B, N]`` (B images of N bytes each; trailing zero
    padding is ignored by the image decoders), or BYTES ``[B]`` / ``[B, 1]`` (B images of any length).
    """
    if not request.model_name:
        raise WireError("request names no model (model_name is empty)")
    if len(request.inputs) != 1:
        raise WireError(f"expected exactly one input tensor (the payload), got {len(request.inputs)}")
    tensor = request.inputs[0]
    params = read_params(request.parameters)
    if tensor.datatype not in ("UINT8", "BYTES"):
        raise WireError(
            f"input {tensor.name!r} must have datatype UINT8 (an encoded image or splitrt bitstream) or BYTES "
            f"(encoded images), got {tensor.datatype!r}"
        )
    shape = list(tensor.shape)
    if CODEC in params:  # a splitrt frame: one bitstream
        if tensor.datatype != "UINT8":
            raise WireError(f"a splitrt frame's payload travels as UINT8, not {tensor.datatype}")
        payload = _one_buffer(request, tensor)
        if shape not in ([len(payload)], [1, len(payload)]):
            raise WireError(f"input shape {shape} does not match the {len(payload)} payload bytes")
        return [frame_from_params(request.model_name, request.id, payload, params)]
    images = _bytes_elements(request, tensor) if tensor.datatype == "BYTES" else _uint8_images(request, tensor)
    if not 1 <= len(images) <= MAX_PLAIN_BATCH:
        raise WireError(f"a request carries 1 to {MAX_PLAIN_BATCH} images, not {len(images)}")
    for index, image in enumerate(images):
        if not image:
            raise WireError("the payload is empty" if len(images) == 1 else f"image {index} of the batch is empty")
    return [FrameRequest(request.model_name, request.id, image, PLAIN_CLIENT_CODEC, INPUT_SPLIT, None, None)
            for image in images]  # fmt: skip


#: Images one plain request may carry (each is decoded and run; the message limit bounds the bytes).
MAX_PLAIN_BATCH = 64


def _one_buffer(request: pb.ModelInferRequest, tensor) -> bytes:
    if len(request.raw_input_contents) == 1:
        payload = request.raw_input_contents[0]
    elif not request.raw_input_contents and tensor.HasField("contents") and len(tensor.contents.bytes_contents) == 1:
        payload = tensor.contents.bytes_contents[0]
    else:
        raise WireError("the payload must travel in raw_input_contents (one entry) as UINT8 bytes")
    if not payload:
        raise WireError("the payload is empty")
    return payload


def _uint8_images(request: pb.ModelInferRequest, tensor) -> list[bytes]:
    payload = _one_buffer(request, tensor)
    shape = list(tensor.shape)
    if shape in ([len(payload)], [1, len(payload)]):
        return [payload]
    if len(shape) == 2 and shape[0] >= 1 and shape[1] >= 1 and shape[0] * shape[1] == len(payload):
        width = shape[1]
        return [payload[i * width : (i + 1) * width] for i in range(shape[0])]
    raise WireError(
        f"input shape {shape} does not match the {len(payload)} payload bytes "
        "(UINT8 [N] or [1, N] for one image, [B, N] for B images of N bytes each)"
    )


def _bytes_elements(request: pb.ModelInferRequest, tensor) -> list[bytes]:
    """A BYTES tensor's elements: raw (each one a 4-byte little-endian length, then its bytes) or in contents."""
    shape = list(tensor.shape)
    if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)) or not 1 <= shape[0] <= MAX_PLAIN_BATCH:
        raise WireError(f"a BYTES input holds one encoded image per element: shape [B] or [B, 1], got {shape}")
    count = shape[0]
    if request.raw_input_contents:
        if len(request.raw_input_contents) != 1:
            raise WireError("a BYTES input must travel in one raw_input_contents entry")
        raw, elements, at = request.raw_input_contents[0], [], 0
        while at < len(raw):
            if at + 4 > len(raw):
                raise WireError("a BYTES element's 4-byte length prefix is cut short")
            size = int.from_bytes(raw[at : at + 4], "little")
            if at + 4 + size > len(raw):
                raise WireError(f"a BYTES element claims {size} bytes, only {len(raw) - at - 4} remain")
            elements.append(raw[at + 4 : at + 4 + size])
            at += 4 + size
            if len(elements) > count:
                break
    elif tensor.HasField("contents"):
        elements = list(tensor.contents.bytes_contents)
    else:
        raise WireError("the BYTES input has no contents")
    if len(elements) != count:
        raise WireError(f"input shape {shape} says {count} elements, the payload holds {len(elements)}")
    return elements


def frame_from_params(model: str, frame_id: str, payload: bytes, params: dict[str, object]) -> FrameRequest:
    """A frame from its payload and request parameters (also what a Triton Python backend receives)."""
    if CODEC not in params:
        return FrameRequest(model, frame_id, payload, PLAIN_CLIENT_CODEC, INPUT_SPLIT, None, None)
    codec, split = params.get(CODEC), params.get(SPLIT)
    if not isinstance(codec, str) or not isinstance(split, str):
        raise WireError(f"parameters {CODEC} and {SPLIT} must both be strings")
    fingerprint = params.get(FINGERPRINT)
    if fingerprint is not None and not isinstance(fingerprint, str):
        raise WireError(f"parameter {FINGERPRINT} must be a string")
    width = params.get(WIDTH)
    if width is not None and (isinstance(width, bool) or not isinstance(width, (int, float)) or not 0 < width <= 1):
        raise WireError(f"parameter {WIDTH} must be a fraction in (0, 1], got {width!r}")
    meta = _read_meta(params)
    return FrameRequest(model, frame_id, payload, codec, split, meta, fingerprint, width)


def _read_meta(params: dict[str, object]) -> FrameMeta:
    keys = (ORIGINAL_H, ORIGINAL_W, RESIZED_H, RESIZED_W, BATCH_H, BATCH_W)
    missing = [k for k in keys if k not in params]
    if missing:
        raise WireError(f"missing frame parameters: {', '.join(missing)}")
    values = [params[k] for k in keys]
    if not all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 65535 for v in values):
        raise WireError(f"frame size parameters must be integers in 1..65535, got {dict(zip(keys, values))}")
    oh, ow, rh, rw, bh, bw = values
    if rh > bh or rw > bw:
        raise WireError(f"resized size {rh}x{rw} does not fit in the batch size {bh}x{bw}")
    return FrameMeta((oh, ow), (rh, rw), (bh, bw))


def build_response(
    model: str, frame_id: str, outputs: dict[str, Tensor], timings_us: dict[str, int]
) -> pb.ModelInferResponse:
    # Built on the event loop for every frame: as few calls per output as will do.
    response = pb.ModelInferResponse(model_name=model, model_version="1", id=frame_id)
    tensors, contents = response.outputs, response.raw_output_contents
    for name, value in outputs.items():
        if value.dtype not in _DATATYPES:
            value = value.float()
        datatype, code = _DATATYPES[value.dtype]
        tensors.add(name=name, datatype=datatype, shape=value.shape)
        # numpy(force=True): detached and on the CPU; tobytes() writes C order whatever the strides.
        contents.append(value.numpy(force=True).astype(code, copy=False).tobytes())
    params = response.parameters
    for key, micros in timings_us.items():
        params[key].int64_param = int(micros)
    return response


def parse_response(response: pb.ModelInferResponse) -> tuple[dict[str, np.ndarray], dict[str, object]]:
    """Named outputs as numpy arrays, plus the response parameters."""
    if len(response.raw_output_contents) != len(response.outputs):
        raise WireError("response has a different number of outputs and raw output buffers")
    outputs = {}
    for tensor, raw in zip(response.outputs, response.raw_output_contents):
        if tensor.datatype not in _NUMPY_OF:
            raise WireError(f"output {tensor.name!r} has unsupported datatype {tensor.datatype!r}")
        outputs[tensor.name] = np.frombuffer(raw, dtype=_NUMPY_OF[tensor.datatype]).reshape(tuple(tensor.shape))
    return outputs, read_params(response.parameters)
