"""`splitrt export triton`: a Triton model repository serving the tails; imported only to run it."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..defaults import DEMO_MODEL


def register_export(exports: argparse._SubParsersAction) -> None:
    triton = exports.add_parser("triton", help="a Triton model repository serving the tails (Python backend)")
    triton.add_argument("--model", action="append", default=[], metavar="[NAME=]ARCH", help="model (repeatable)")
    triton.add_argument("--config", help="TOML file with [[models]] tables, as for splitrt-server")
    triton.add_argument("--out", default="runs/triton-repository", help="repository folder (default: %(default)s)")
    triton.add_argument("--max-batch", type=int, default=16, help="Triton dynamic batching (default: %(default)s)")
    triton.add_argument("--delay-us", type=int, default=5000, help="max queue delay, µs (default: %(default)s)")
    triton.add_argument("--instances", type=int, default=1, help="model instances (default: %(default)s)")
    triton.add_argument(
        "--pytriton", help="site-packages holding nvidia-pytriton: also write its backend folder and print the command"
    )

    triton.set_defaults(handler=_export_triton)


def _export_triton(args: argparse.Namespace) -> int:
    from ..models.spec import load_config, parse_model_flag
    from . import triton

    specs = load_config(args.config) if args.config else []
    specs += [parse_model_flag(name) for name in args.model] or ([] if specs else [parse_model_flag(DEMO_MODEL)])
    out = triton.write_repository(specs, args.out, args.instances, args.max_batch, args.delay_us)
    print(f"Triton model repository: {out} ({', '.join(s.name for s in specs)})")
    site = triton.find_tritonserver(args.pytriton)
    if site is None:
        print("nvidia-pytriton not found: install it (pip install nvidia-pytriton, numpy<2) and pass --pytriton")
        return 0
    backends = triton.backend_directory(site, Path(args.out).with_name(Path(args.out).name + "-backends"))
    env = triton.triton_environment(site)
    command = " ".join(triton.tritonserver_command(site, out, backends, 8001))
    print(f"run it with:\n  LD_LIBRARY_PATH={env['LD_LIBRARY_PATH']} {command}")
    return 0
