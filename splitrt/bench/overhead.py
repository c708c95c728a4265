"""`splitrt bench overhead`: what splitrt adds per frame, against a bare grpc.aio stream, side by side.

One run measures, in turn and on the same loopback:

* the components in this process (head, encode, decode, tail), single frames, with the
  thread setting under test: what the hardware allows;
* splitrt end to end (`SplitClient.stream` to a real `splitrt-server` process) at 1 and
  ``window`` frames in flight, for each thread setting;
* a bare ``grpc.aio`` bidirectional stream (raw bytes, an echo server in its own process)
  with splitrt's own request and response sizes;
* the floor: the same bare stream whose server decodes, runs each frame's tail and builds its
  answer inline with splitrt's own code, and whose client computes the same head and encode
  between frames (as an edge does; the server then waits idle, and waking it costs more than
  in a tight loop).

Overhead per frame = end-to-end latency at 1 in flight minus the compute the server and
edge report for that very frame (head, encode, decode, tail).  It contains everything
else: protobuf, thread hops, the event loop, the transport.  The bare stream's round trip
is the part of it that any gRPC stream pays.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..launch import ServerProcess, free_port
from ..stats import percentile

ECHO_METHOD = "/splitrt.bench.Echo/Stream"
DEFAULT_MODEL = "shapes_fcos"
DEFAULT_SPLIT = "features.6/eb2"
DEFAULT_CODEC = "entropy"


# -- the bare stream ---------------------------------------------------------------------------------
def _serve_stream(port: int, stream) -> None:
    """Serve ``stream`` (an async generator handler) as the bare bidi method on loopback until killed;
    prints "ready" once it listens."""
    import grpc

    async def main() -> None:
        server = grpc.aio.server()
        handler = grpc.method_handlers_generic_handler(
            "splitrt.bench.Echo", {"Stream": grpc.stream_stream_rpc_method_handler(stream)}
        )
        server.add_generic_rpc_handlers((handler,))
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        print("ready", flush=True)
        await server.wait_for_termination()

    asyncio.run(main())


def serve_echo(port: int, response_bytes: int, work_ms: float = 0.0) -> None:
    """A grpc.aio server answering each message of a bidi stream with ``response_bytes`` bytes.

    With ``work_ms`` each answer first waits for a ``work_ms`` job on a worker thread, the shape
    of a tail: the cost of that one thread hop (and of waking up after it) is then measured too.
    """
    from concurrent.futures import ThreadPoolExecutor

    answer = b"\0" * response_bytes
    worker = ThreadPoolExecutor(1)

    def job() -> None:
        end = time.perf_counter() + work_ms / 1e3
        while time.perf_counter() < end:
            pass

    async def stream(request_iterator, context):
        loop = asyncio.get_running_loop()
        async for _ in request_iterator:
            if work_ms > 0:
                await loop.run_in_executor(worker, job)
            yield answer

    _serve_stream(port, stream)


def serve_tail_echo(port: int, model: str) -> None:
    """A bare grpc.aio stream that does a splitrt frame's real work inline: each message is parsed as
    a ModelInferRequest, decoded and run through the tail (splitrt's own decode and tail code, with
    the server's default thread count), and answered with the detections as splitrt's server sends
    them (a ModelStreamInferResponse carrying the decode and tail times).  What is left of a round
    trip, less that work, is the floor of any Python gRPC server that runs this model on its event
    loop and sends its answers: no admission, metrics or bookkeeping."""
    from ..models.spec import parse_model_flag
    from ..server.repository import ServedModel
    from ..threads import apply_threads, server_threads
    from ..wire import kserve_v2_pb2 as pb
    from ..wire.protocol import DECODE_US, TAIL_US, build_response, parse_request

    apply_threads(server_threads(1))  # the server's default for one instance
    served = ServedModel(parse_model_flag(model), "cpu")

    async def stream(request_iterator, context):
        async for raw in request_iterator:
            request = pb.ModelInferRequest.FromString(raw)
            outputs, decode_ns, start, end = served.infer(parse_request(request))
            timings = {DECODE_US: decode_ns // 1000, TAIL_US: (end - start) // 1000}
            answer = build_response(served.name, request.id, outputs, timings)
            yield pb.ModelStreamInferResponse(infer_response=answer).SerializeToString()

    _serve_stream(port, stream)


async def _bare_tail_run(address: str, count: int, message_for: Callable[[int], bytes]) -> list[float]:
    """Per message, one at a time: the round trip less the decode and tail the server reported (ms).

    ``message_for(i)`` gives message ``i``, untimed (a stored one, or an edge's head and encode run
    there and then)."""
    import grpc

    from ..wire import kserve_v2_pb2 as pb
    from ..wire.protocol import DECODE_US, TAIL_US

    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.stream_stream(ECHO_METHOD)()
        over = []
        for i in range(count):
            message = message_for(i)
            began = time.perf_counter()
            await call.write(message)
            params = pb.ModelStreamInferResponse.FromString(await call.read()).infer_response.parameters
            ended = time.perf_counter()
            work_ms = (params[DECODE_US].int64_param + params[TAIL_US].int64_param) / 1e3
            over.append((ended - began) * 1e3 - work_ms)
        await call.done_writing()
    return over


def bare_stream_with_tail(model: str, split: str, codec: str, frames: int, rounds: int = 2) -> dict[str, float]:
    """The bare stream doing the frames' real decode and tail inline: round trip over that work (ms),
    with the messages sent back to back, and with the edge's real head and encode computed (untimed)
    before each one, as a split pipeline does.

    The second is the floor of this pipeline on this machine: while the edge computes, the server
    sits idle, and waking it (and the edge, after the tail) costs more than in a tight loop.
    """
    from ..edge.pipeline import FramePipeline
    from ..models.spec import parse_model_flag
    from ..threads import apply_threads, edge_threads

    pipeline = FramePipeline(parse_model_flag(model), split, codec)
    images = _frames(frames)
    messages = [pipeline.prepare(image).request.SerializeToString() for image in images]  # back to back
    port = free_port()
    address = f"127.0.0.1:{port}"
    apply_threads(edge_threads(address, 1))  # the edge's default at one frame in flight
    code = f"from splitrt.bench.overhead import serve_tail_echo; serve_tail_echo({port}, {model!r})"
    server = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)

    def head_and_encode(i: int) -> bytes:
        return pipeline.prepare(images[i]).request.SerializeToString()

    try:
        server.stdout.readline()  # "ready"
        asyncio.run(_bare_tail_run(address, min(10, frames), head_and_encode))  # warm-up
        back_to_back: list[float] = []
        with_head: list[float] = []
        for _ in range(rounds):  # interleaved: a busy spell on a shared machine hits both alike
            back_to_back += asyncio.run(_bare_tail_run(address, frames, messages.__getitem__))
            with_head += asyncio.run(_bare_tail_run(address, frames, head_and_encode))
        return {
            "frames": len(messages),
            "over_work_p50_ms": percentile(back_to_back, 50),
            "over_work_p99_ms": percentile(back_to_back, 99),
            "with_head_over_work_p50_ms": percentile(with_head, 50),
            "with_head_over_work_p99_ms": percentile(with_head, 99),
        }
    finally:
        server.terminate()
        server.wait(timeout=10)


async def _bare_run(address: str, request_bytes: int, frames: int, window: int) -> tuple[list[float], float]:
    """Round trips (s) of ``frames`` messages with ``window`` in flight, and the total wall time."""
    import grpc

    message = b"\1" * request_bytes
    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.stream_stream(ECHO_METHOD)()
        sent: list[float] = []
        rtts: list[float] = []
        began = time.perf_counter()
        for _ in range(min(window, frames)):
            sent.append(time.perf_counter())
            await call.write(message)
        for i in range(frames):
            await call.read()
            rtts.append(time.perf_counter() - sent[i])
            if len(sent) < frames:
                sent.append(time.perf_counter())
                await call.write(message)
        wall = time.perf_counter() - began
        await call.done_writing()
    return rtts, wall


def bare_stream(
    request_bytes: int, response_bytes: int, frames: int, windows: list[int], work_ms: float = 0.0
) -> dict[int, dict]:
    port = free_port()
    code = f"from splitrt.bench.overhead import serve_echo; serve_echo({port}, {response_bytes}, {work_ms})"
    server = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        server.stdout.readline()  # "ready"
        out = {}
        for window in windows:
            asyncio.run(_bare_run(f"127.0.0.1:{port}", request_bytes, 20, window))  # warm-up
            rtts, wall = asyncio.run(_bare_run(f"127.0.0.1:{port}", request_bytes, frames, window))
            out[window] = {
                "p50_ms": percentile(rtts, 50) * 1e3,
                "p99_ms": percentile(rtts, 99) * 1e3,
                "fps": frames / wall,
                "over_work_p50_ms": percentile(rtts, 50) * 1e3 - work_ms,
            }
        return out
    finally:
        server.terminate()
        server.wait(timeout=10)


# -- splitrt -----------------------------------------------------------------------------------------
def _frames(count: int):
    from ..data.datasets import to_tensor
    from ..data.shapes import sample

    return [to_tensor(sample(i, "test", 1)[0]) for i in range(count)]


def components(
    model_name: str, split: str, codec_name: str, images: list, edge_threads: int, server_threads: int
) -> dict[str, float]:
    """Median ms of each stage in this process, one frame at a time: head and encode with the edge's
    thread count, decode and tail with the server's."""
    import torch

    from ..codecs import get_codec
    from ..models import build_model

    model = build_model(model_name)
    codec = get_codec(codec_name, model, split)
    times: dict[str, list[float]] = {"head": [], "encode": [], "decode": [], "tail": []}
    sent = []
    with torch.inference_mode():
        torch.set_num_threads(edge_threads)
        for image in images:
            t0 = time.perf_counter()
            features, meta = model.head(image, split)
            t1 = time.perf_counter()
            sent.append((codec.encode(features), meta))
            times["head"].append((t1 - t0) * 1e3)
            times["encode"].append((time.perf_counter() - t1) * 1e3)
        torch.set_num_threads(server_threads)
        for payload, meta in sent:
            t2 = time.perf_counter()
            decoded = codec.decode(payload, model.payload_limits(split, meta))
            t3 = time.perf_counter()
            model.tail(OrderedDict(decoded), meta, split)
            times["decode"].append((t3 - t2) * 1e3)
            times["tail"].append((time.perf_counter() - t3) * 1e3)
    medians = {k: statistics.median(v[len(v) // 4 :]) for k, v in times.items()}  # first quarter warms up
    medians["edge"] = medians["head"] + medians["encode"]
    medians["server"] = medians["decode"] + medians["tail"]
    return medians


def splitrt_stream(target: str, model: str, split: str, codec: str, images: list, window: int) -> dict[str, Any]:
    from ..edge.client import SplitClient

    with SplitClient(target, model, split, codec, max_in_flight=window) as client:
        client.wait_ready(120)
        list(client.stream(images[:10]))  # warm-up: connection, first calls
        began = time.perf_counter()
        results = list(client.stream(images))
        wall = time.perf_counter() - began
        request = client.pipeline.prepare(images[0]).request
        request_bytes = request.ByteSize()
        response_bytes = client._stub.ModelInfer(request, timeout=30).ByteSize()
    failed = [r for r in results if r.mode != "split"]
    if failed:
        raise RuntimeError(f"{len(failed)} frames not answered by the server, e.g. {failed[0].error or failed[0].note}")
    total = [r.timings_ms["total"] for r in results]
    compute = [
        r.timings_ms["head"] + r.timings_ms["encode"] + r.timings_ms["server_decode"] + r.timings_ms["server_tail"]
        for r in results
    ]
    overhead = [t - c for t, c in zip(total, compute, strict=True)]
    return {
        "window": window,
        "frames": len(results),
        "fps": len(results) / wall,
        "p50_ms": percentile(total, 50),
        "p99_ms": percentile(total, 99),
        "overhead_p50_ms": percentile(overhead, 50),
        "tail_p50_ms": percentile([r.timings_ms["server_tail"] for r in results], 50),
        "head_p50_ms": percentile([r.timings_ms["head"] for r in results], 50),
        "request_bytes": request_bytes,
        "response_bytes": response_bytes,
    }


#: label: (the server's --threads, this edge's torch threads); None is the thread policy's default.
SETTINGS: dict[str, tuple[int | None, int | None]] = {
    "new defaults": (None, None),
    "torch defaults": (0, 0),  # what splitrt did before the policy
    "server 1 edge 1": (1, 1),
    "server 2 edge 1": (2, 1),
    "server 1 edge 2": (1, 2),
    "server 2 edge 2": (2, 2),
}
#: Settings that differ in a server flag too: the new defaults with the tail kept on a worker thread.
SERVER_FLAGS: dict[str, list[str]] = {"defaults, tail on a worker": ["--inline-ms", "0"]}
SETTINGS["defaults, tail on a worker"] = (None, None)


def run(
    model: str, split: str, codec: str, frames: int, window: int, settings: list[str], rounds: int = 1
) -> dict[str, Any]:
    """Every setting ``rounds`` times, interleaved (a busy spell on a shared machine then hits all of
    them alike); each figure is the median over the rounds."""
    measured: dict[str, list[dict]] = {label: [] for label in settings}
    for _ in range(rounds):
        for label in settings:
            # Each setting in a fresh interpreter (the edge's side of it): torch's thread pools are per process.
            measured[label].append(_setting_in_subprocess(label, model, split, codec, frames, window))
    rows = [_median_row(runs) for runs in measured.values()]
    request_bytes, response_bytes = rows[-1]["request_bytes"], rows[-1]["response_bytes"]
    bare = bare_stream(request_bytes, response_bytes or 300, max(200, frames), [1, window])
    # The same bare stream with one worker-thread hop around a job as long as the tail: what an asyncio
    # server that runs its model on a worker thread pays at least, on this machine.
    tail_ms = rows[0]["one"]["tail_p50_ms"]
    hop = bare_stream(request_bytes, response_bytes or 300, max(100, frames // 2), [1], work_ms=tail_ms)[1]
    # The same frames' real decode and tail inline on a bare stream, and with the edge's head between
    # frames: splitrt's default path without splitrt (the caches a tail leaves cold, and waking the
    # idle side, are in this floor too).
    with_tail = bare_stream_with_tail(model, split, codec, frames, rounds=max(2, rounds))
    return {
        "benchmark": "overhead",
        "model": model,
        "split": split,
        "codec": codec,
        "cores": os.cpu_count(),
        "rows": rows,
        "bare": {str(k): v for k, v in bare.items()},
        "bare_with_worker_hop": {"work_ms": tail_ms, **hop},
        "bare_with_tail": with_tail,
    }


def _median_row(runs: list[dict]) -> dict:
    """One setting's row: the median of each number over the rounds (the first round's other fields)."""
    row = json.loads(json.dumps(runs[0]))
    for key in ("one", "many"):
        for field, value in row[key].items():
            if isinstance(value, float):
                row[key][field] = statistics.median(r[key][field] for r in runs)
    row["rounds"] = len(runs)
    return row


def _setting_in_subprocess(label: str, model: str, split: str, codec: str, frames: int, window: int) -> dict:
    command = [
        sys.executable, "-m", "splitrt.bench.overhead", "--one", label, "--model", model, "--split", split,
        "--codec", codec, "--frames", str(frames), "--window", str(window),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"setting {label!r} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def one_setting(label: str, model: str, split: str, codec: str, frames: int, window: int) -> dict[str, Any]:
    """For one thread setting: the components in process, then the stream at 1 and ``window`` in flight."""
    import torch

    from ..threads import apply_threads, edge_threads, server_threads

    torch_default = torch.get_num_threads()  # before anything changes it: what "0" stands for
    server_setting, edge_setting = SETTINGS[label]
    images = _frames(frames)
    server_args = ["--model", model, "--max-rate", "0", "--log-level", "WARNING", *SERVER_FLAGS.get(label, [])]
    if server_setting is not None:
        server_args += ["--threads", str(server_setting)]
    server_count = (server_threads(1) if server_setting is None else server_setting) or torch_default
    rows = {}
    with ServerProcess(server_args) as server:
        for key, in_flight in (("one", 1), ("many", window)):
            edge_count = edge_threads(server.address, in_flight) if edge_setting is None else edge_setting
            edge_count = edge_count or torch_default
            parts = components(model, split, codec, images[: min(40, frames)], edge_count, server_count)
            apply_threads(edge_count)
            rows[key] = splitrt_stream(server.address, model, split, codec, images, in_flight)
            rows[key]["components_ms"] = parts
            rows[key]["edge_threads"] = edge_count
            rows[key]["bound_fps"] = 1e3 / max(parts["edge"], parts["server"])
    return {
        "setting": label,
        "server_threads": server_count,
        **rows,
        "request_bytes": rows["one"]["request_bytes"],
        "response_bytes": rows["one"]["response_bytes"],
    }


def format_table(result: dict[str, Any]) -> str:
    bare = result["bare"]
    hop = result["bare_with_worker_hop"]
    with_tail = result["bare_with_tail"]
    floor = with_tail["with_head_over_work_p50_ms"]
    window = result["rows"][0]["many"]["window"]
    b1 = bare["1"]
    w = str(window)
    lines = [
        f"bench overhead: {result['model']} {result['split']} {result['codec']}, loopback, {result['cores']} cores",
        f"request {result['rows'][0]['request_bytes']} B, response {result['rows'][0]['response_bytes']} B; bare "
        f"grpc.aio stream with the same sizes: {b1['p50_ms']:.2f} ms p50 round trip at 1 in flight, "
        f"{bare[w]['fps']:.0f} msg/s at {window}; with one worker-thread hop around a "
        f"{hop['work_ms']:.1f} ms job: {hop['over_work_p50_ms']:.2f} ms over the job; doing the frames' own "
        f"decode, tail and answer inline: {with_tail['over_work_p50_ms']:.2f} ms over decode and tail with "
        f"frames sent back to back, {floor:.2f} ms with the edge's head and encode computed before each "
        "frame (the floor)",
        f"{'setting':<26} {'threads':>7} {'e2e@1':>6} {'overhead':>8} {'vs bare':>7} {'- floor':>7} {'threads':>7} "
        f"{'e2e@' + w:>6} {'fps@' + w:>6} {'bound':>6} {'of bound':>8}",
    ]
    for r in result["rows"]:
        one, many = r["one"], r["many"]
        lines.append(
            f"{r['setting']:<26} {r['server_threads']:>3}/{one['edge_threads']:<3} {one['p50_ms']:>6.1f} "
            f"{one['overhead_p50_ms']:>8.2f} {one['overhead_p50_ms'] / b1['p50_ms']:>6.1f}x "
            f"{one['overhead_p50_ms'] - floor:>7.2f} {r['server_threads']:>3}/{many['edge_threads']:<3} "
            f"{many['p50_ms']:>6.1f} {many['fps']:>6.1f} "
            f"{many['bound_fps']:>6.1f} {many['fps'] / many['bound_fps']:>7.0%}"
        )
    lines.append(
        "threads: server/edge torch threads; e2e: p50 ms end to end; overhead: e2e@1 minus the head, encode, "
        "decode and tail of that frame;\n- floor: what splitrt adds over a bare grpc.aio stream doing the same "
        "decode, tail and answer inline, its client computing the same head and encode between frames;\n"
        "bound: frames/s the slower side (edge or server) allows when the two work at once (components timed "
        "in one process with the same threads)"
    )
    return "\n".join(lines)


def add_parser(benches: argparse._SubParsersAction) -> None:
    parser = benches.add_parser("overhead", help="per-frame overhead of splitrt vs a bare grpc.aio stream; threads")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model (default: %(default)s)")
    parser.add_argument("--split", default=DEFAULT_SPLIT, help="split (default: %(default)s)")
    parser.add_argument("--codec", default=DEFAULT_CODEC, help="codec (default: %(default)s)")
    parser.add_argument("--frames", type=int, default=200, help="frames per measurement (default: %(default)s)")
    parser.add_argument("--window", type=int, default=4, help="frames in flight for throughput (default: %(default)s)")
    parser.add_argument(
        "--setting", action="append", choices=list(SETTINGS), help="thread settings to compare (default: all)"
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="repeat every setting, interleaved; medians (default: %(default)s)"
    )
    parser.add_argument("--out", default="runs/bench-overhead.json", help="JSON output (default: %(default)s)")
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    settings = args.setting or list(SETTINGS)
    result = run(args.model, args.split, args.codec, args.frames, args.window, settings, args.rounds)
    print(format_table(result))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    cli = argparse.ArgumentParser()
    cli.add_argument("--one", required=True)
    for flag, default in (("--model", DEFAULT_MODEL), ("--split", DEFAULT_SPLIT), ("--codec", DEFAULT_CODEC)):
        cli.add_argument(flag, default=default)
    cli.add_argument("--frames", type=int, default=200)
    cli.add_argument("--window", type=int, default=4)
    a = cli.parse_args()
    print(json.dumps(one_setting(a.one, a.model, a.split, a.codec, a.frames, a.window)))
