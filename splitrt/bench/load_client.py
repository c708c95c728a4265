"""One load-generating edge for `splitrt bench load`: replays a pre-encoded frame over one stream.

Kept free of torch so that dozens of these start quickly and cost the
machine nothing but the gRPC work itself.
"""

from __future__ import annotations

import argparse
import json
import queue
import threading
import time
from pathlib import Path

import grpc

from ..wire import kserve_v2_pb2 as pb
from ..wire import kserve_v2_pb2_grpc as pb_grpc


def run(target: str, request_path: Path, seconds: float, in_flight: int, go_file: Path, ready_file: Path) -> dict:
    template = pb.ModelInferRequest.FromString(request_path.read_bytes())
    channel = grpc.insecure_channel(target)
    grpc.channel_ready_future(channel).result(timeout=60)
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    ready_file.write_text("ready")
    while not go_file.exists():
        time.sleep(0.01)
    start_at = float(go_file.read_text())
    time.sleep(max(0.0, start_at - time.time()))

    outgoing: queue.Queue = queue.Queue()
    slots = threading.Semaphore(in_flight)
    sent_at: dict[str, float] = {}
    latencies, errors = [], []
    end = time.monotonic() + seconds

    def produce():
        frame = 0
        while time.monotonic() < end:
            slots.acquire()
            request = pb.ModelInferRequest()
            request.CopyFrom(template)
            request.id = str(frame)
            sent_at[request.id] = time.perf_counter()
            outgoing.put(request)
            frame += 1
        outgoing.put(None)

    threading.Thread(target=produce, daemon=True).start()
    try:
        for reply in stub.ModelStreamInfer(iter(outgoing.get, None), timeout=seconds + 60):
            began = sent_at.pop(reply.infer_response.id, None)
            if reply.error_message:
                errors.append(reply.error_message[:200])
            elif began is not None:
                latencies.append((time.perf_counter() - began) * 1e3)
            slots.release()
    except grpc.RpcError as exc:
        errors.append(f"stream failed: {exc.code().name}: {exc.details()}")
    channel.close()
    return {"latencies_ms": latencies, "errors": errors, "unanswered": len(sent_at), "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description="a load-generating edge (used by `splitrt bench load`)")
    parser.add_argument("--server", required=True)
    parser.add_argument("--request", required=True, type=Path)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--in-flight", type=int, default=4)
    parser.add_argument("--go", required=True, type=Path)
    parser.add_argument("--ready", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    result = run(args.server, args.request, args.seconds, args.in_flight, args.go, args.ready)
    args.out.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
