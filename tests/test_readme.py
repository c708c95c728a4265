"""Every command in the README, exactly as written, from a folder laid out like a fresh clone.

The commands run in the README's order in a scratch folder with ``../shared`` beside it,
against the ``splitrt-server --port 8001`` the README starts.  Commands that need hours
(training), files only a user has (their own weights and data) or minutes of benchmarking
are parsed by their own command's parser instead (every flag and value checked), and each
says why; a README command the test does not know fails it, so a new command gets a test.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
BIN = Path(sys.executable).parent

#: Commands checked by their parser only, by how they start, with the reason.
PARSE_ONLY = {
    "make demo": "runs `splitrt demo`, which tests/test_cli.py runs as the README says",
    "make test": "this suite",
    "splitrt profile": "re-measures every configuration: minutes",
    "splitrt train": "training: minutes to hours",
    "splitrt import-weights": "needs the user's own .pth file",
    "splitrt-server --model runs/bn/": "serves the card the user's training wrote",
    "splitrt-edge clip.mp4 --model runs/bn/": "runs the card the user's training wrote",
    "splitrt bench rate": "benchmark: minutes (tests/test_bench_wire.py and others run the benches small)",
    "splitrt bench switch": "benchmark: minutes",
    "splitrt bench prefilter": "benchmark: minutes",
    "splitrt bench load": "benchmark: minutes",
    "splitrt bench overhead": "benchmark: minutes (tests/test_bench_overhead.py runs it small)",
    "splitrt bench perf-analyzer": "benchmark: minutes (tests/test_model_config.py runs it small)",
    "cp runs/bottleneck/": "copies what training wrote",
}
#: Commands that keep running (servers, proxies): started, checked, then stopped with SIGTERM.
BACKGROUND = {"splitrt-server": 8001, "splitrt channel": 9000}


def readme_commands() -> list[str]:
    """Every command line of the README's bash blocks (continuations joined, comments dropped)."""
    text = (ROOT / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip() if not line.strip().startswith("#") else ""
            if line:
                commands.append(" ".join(line.split()))
    return commands


def readme_python() -> str:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)[0]


def _parse_only(command: str) -> str | None:
    return next((why for start, why in PARSE_ONLY.items() if command.startswith(start)), None)


def _check_parses(command: str) -> None:
    argv = shlex.split(command)
    if argv[0] in ("make", "cp"):
        return
    from splitrt.cli import build_parser as splitrt_parser
    from splitrt.edge.cli import build_parser as edge_parser
    from splitrt.server.app import build_parser as server_parser

    parser = {"splitrt": splitrt_parser, "splitrt-edge": edge_parser, "splitrt-server": server_parser}[argv[0]]()
    try:
        parser.parse_args(argv[1:])
    except SystemExit as exc:
        raise AssertionError(f"README command does not parse: {command}") from exc


def _wait_port(port: int, proc: subprocess.Popen, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"exited with {proc.returncode} before listening on {port}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise AssertionError(f"nothing listens on {port} after {timeout_s}s")


@pytest.fixture
def clone(tmp_path) -> Path:
    """A scratch folder laid out like a fresh clone: the repo's files here, ``../shared`` beside it."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("server", "edge", "examples"):
        (repo / name).symlink_to(ROOT / name)
    (tmp_path / "shared").symlink_to(SHARED)
    return repo


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared (the traces) is not beside the repository")
def test_every_readme_command_runs_as_written(clone):
    for port in BACKGROUND.values():
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                pytest.skip(f"port {port}, which the README uses, is taken on this machine")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    background: list[subprocess.Popen] = []
    ran = []
    try:
        for command in readme_commands():
            if _parse_only(command):
                _check_parses(command)
                continue
            kind = next((k for k in BACKGROUND if command.startswith(k)), None)
            if kind is not None:
                proc = subprocess.Popen(shlex.split(command), cwd=clone, env=env, stdout=subprocess.DEVNULL)
                background.append(proc)
                _wait_port(BACKGROUND[kind], proc)
                ran.append(command)
                continue
            done = subprocess.run(
                shlex.split(command), cwd=clone, env=env, capture_output=True, text=True, timeout=300
            )
            said = f"{command}\nexit {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
            assert done.returncode == 0, said
            assert "Traceback" not in done.stderr, f"{command}\n{done.stderr[-3000:]}"
            assert done.stdout.strip(), f"{command} printed nothing"
            _check_output(command, done.stdout)
            ran.append(command)
        script = clone / "readme_example.py"
        script.write_text(readme_python())
        done = subprocess.run([sys.executable, str(script)], cwd=clone, env=env, capture_output=True, text=True,
                              timeout=300)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        assert (clone / "frame.png").is_file() and _names(done.stdout), done.stdout[-2000:]
    finally:
        for proc in reversed(background):
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
    for proc in background:
        assert proc.returncode == 0, f"{proc.args} did not stop cleanly on SIGTERM (exit {proc.returncode})"
    assert len(ran) >= 14, ran


def _names(stdout: str) -> list[str]:
    return re.findall(r"'(circle|square|triangle|star|cross|ring|arrow|tee)'", stdout)


def _check_output(command: str, stdout: str) -> None:
    """Meaningful output, not only a zero exit: the edge answered frames with detections."""
    if command.startswith("splitrt-edge"):
        answered = re.search(r"frames: (\d+)\s+answered: (\d+)\s+errors: (\d+)", stdout)
        assert answered, stdout[-2000:]
        frames, ok, errors = (int(g) for g in answered.groups())
        assert frames > 0 and errors == 0 and ok + stdout.count("prefiltered") >= 1, stdout[-2000:]
        dets = re.search(r"detections/frame \(score >= 0.5\): ([\d.]+)", stdout)
        assert dets and float(dets.group(1)) > 0.5, stdout[-2000:]


def test_the_readme_knows_every_command_it_lists():
    """Each command is run or parsed; parsed ones name a reason (this keeps PARSE_ONLY honest)."""
    commands = readme_commands()
    assert any(c.startswith("splitrt-server") for c in commands)
    for command in commands:
        if _parse_only(command):
            _check_parses(command)
