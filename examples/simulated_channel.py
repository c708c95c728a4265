"""Run one simulated-channel experiment on a shared uplink trace and say where its table and plots went.

    python examples/simulated_channel.py [TRACE] [--deadline-ms 250]

Needs a profile; it is measured first (about a minute) when runs/profile.json
does not exist yet.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TRACE = ROOT.parent / "shared" / "traces" / "cellular-uplink" / "ATT-LTE-driving-2016.up"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trace", nargs="?", default=str(DEFAULT_TRACE), help="Mahimahi or CSV trace")
    parser.add_argument("--deadline-ms", type=float, default=130.0)
    parser.add_argument("--out", default=str(ROOT / "runs" / "example-simulation"))
    args = parser.parse_args()
    profile = ROOT / "runs" / "profile.json"
    if not profile.is_file():
        print(f"measuring a profile first -> {profile}")
        subprocess.run([sys.executable, "-m", "splitrt", "profile", "--out", str(profile)], check=True)
    command = [
        sys.executable, "-m", "splitrt", "simulate", "--trace", args.trace, "--profile", str(profile),
        "--deadline-ms", str(args.deadline_ms), "--out", args.out,
    ]  # fmt: skip
    subprocess.run(command, check=True)
    out = Path(args.out)
    print("\nwritten:")
    for path in sorted(out.iterdir()):
        print(f"  {path}")
    verdict = json.loads((out / "summary.json").read_text())["traces"][0]
    print(
        f"\nadaptive met {100 * verdict['adaptive_hit_rate']:.1f}% of {args.deadline_ms:g} ms deadlines; "
        f"the best static remote configuration ({verdict['best_static_remote']}) "
        f"met {100 * verdict['best_static_hit_rate']:.1f}%"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
