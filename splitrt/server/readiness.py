"""Waiting for a splitrt-server process to report SERVING (benchmarks, experiments)."""

from __future__ import annotations

import subprocess
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def wait_serving(address: str, proc: subprocess.Popen | None = None, timeout_s: float = 180.0) -> None:
    """Block until the server at ``address`` answers SERVING; raise if it exits or takes too long."""
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"splitrt-server on {address} exited with {proc.returncode}")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.3)
    raise TimeoutError(f"splitrt-server on {address} not serving after {timeout_s:.0f}s")
