"""Starting and stopping `splitrt-server` processes: one place for the demo, benchmarks, live runs and tests.

Everything that needs a real server in its own process goes through `ServerProcess`: a free
loopback port, waiting until health says SERVING (failing fast if the process dies), and a
clean stop (SIGTERM, then a kill after a grace period) that reports the exit code.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

#: How long a stopping server may finish the frames it holds before it is killed.
STOP_GRACE_S = 30.0
#: What `stop` returns for a server that had to be killed.
KILLED = -9


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on now (the OS picks it; a race with another process is possible but rare)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_serving(
    address: str,
    proc: subprocess.Popen | None = None,
    timeout_s: float = 180.0,
    log: Path | None = None,
    channel_factory: Callable[[str], Any] | None = None,
) -> None:
    """Block until the server at ``address`` answers SERVING; raise if it exits or takes too long.

    ``channel_factory`` opens the channel (a TLS server needs credentials); plaintext by default.
    """
    import grpc  # here, so that importing this module stays cheap
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout_s
    tail = (lambda: "\n" + log.read_text()[-4000:]) if log is not None else (lambda: "")
    with (channel_factory or grpc.insecure_channel)(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"splitrt-server on {address} exited with {proc.returncode}{tail()}")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise TimeoutError(f"splitrt-server on {address} not serving after {timeout_s:.0f}s{tail()}")


class ServerProcess:
    """A `splitrt-server` in its own process on loopback; a context manager that waits for SERVING.

    ``args`` are the server's own flags (``--model``, ``--config``, ``--threads`` ...); the port is
    chosen here unless given.  Output goes to ``log`` (a path) or is inherited.
    """

    def __init__(
        self,
        args: Sequence[str],
        *,
        port: int | None = None,
        log: Path | None = None,
        env: Mapping[str, str] | None = None,
        timeout_s: float = 180.0,
        channel_factory: Callable[[str], Any] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.channel_factory = channel_factory
        self.address = f"127.0.0.1:{self.port}"
        self.log_path = log
        self.timeout_s = timeout_s
        self._log_file: IO | None = log.open("a") if log is not None else None
        command = [sys.executable, "-m", "splitrt.server.app", "--port", str(self.port), *args]
        self.proc = subprocess.Popen(
            command,
            stdout=self._log_file,
            stderr=subprocess.STDOUT if self._log_file is not None else None,
            env={**os.environ, **env} if env is not None else None,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_serving(self) -> ServerProcess:
        try:
            wait_serving(self.address, self.proc, self.timeout_s, self.log_path, self.channel_factory)
        except BaseException:
            self.stop()
            raise
        return self

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path is not None and self.log_path.exists() else ""

    def stop(self, grace_s: float = STOP_GRACE_S) -> int:
        """SIGTERM, wait up to ``grace_s``, then kill; the exit code (`KILLED` if it had to be killed)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            code = KILLED
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return code

    def __enter__(self) -> ServerProcess:
        return self.wait_serving()

    def __exit__(self, *exc: object) -> None:
        self.stop()
