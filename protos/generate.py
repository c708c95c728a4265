"""Regenerate splitrt's gRPC stubs (``make proto``) and point them at splitrt's private descriptor pool.

protoc's Python output registers the file in protobuf's default pool, where Triton's
``tritonclient`` registers the same KServe v2 names; see ``splitrt/wire/pool.py``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROTO = "protos/splitrt/wire/kserve_v2.proto"
STUB = ROOT / "splitrt/wire/kserve_v2_pb2.py"
DEFAULT_POOL = "DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile("
PRIVATE_POOL = (
    "from splitrt.wire.pool import POOL as _POOL  # splitrt: a private pool, see splitrt/wire/pool.py\n"
    "DESCRIPTOR = _POOL.AddSerializedFile("
)


def main() -> int:
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-Iprotos", "--python_out=.", "--pyi_out=.",
         "--grpc_python_out=.", PROTO],
        cwd=ROOT,
        check=True,
    )  # fmt: skip
    text = STUB.read_text()
    if DEFAULT_POOL not in text:
        print(f"{STUB}: protoc's output changed shape; cannot find {DEFAULT_POOL!r}", file=sys.stderr)
        return 1
    STUB.write_text(text.replace(DEFAULT_POOL, PRIVATE_POOL))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
