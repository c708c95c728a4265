"""Every `splitrt` subcommand is wired to a function, has --help, and the demo runs as the README says."""

from __future__ import annotations

import argparse
import json
import types

import pytest

from splitrt.cli import build_parser, main


def _leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subparsers:
        yield path, parser
        return
    for name, child in subparsers[0].choices.items():
        yield from _leaves(child, (*path, name))


LEAVES = list(_leaves(build_parser()))


@pytest.mark.parametrize("path", [p for p, _ in LEAVES], ids=[" ".join(p) for p, _ in LEAVES])
def test_every_command_runs_a_function_and_has_help(path, capsys):
    parser = dict(LEAVES)[path]
    handler = parser.get_default("handler")
    assert isinstance(handler, types.FunctionType), f"{' '.join(path)} has no function to run: {handler!r}"
    with pytest.raises(SystemExit) as done:
        main([*path, "--help"])
    assert done.value.code == 0
    assert "usage: splitrt" in capsys.readouterr().out


def test_the_demo_runs_as_the_readme_says(tmp_path, capsys):
    out = tmp_path / "demo.jsonl"
    assert main(["demo", "--frames", "4", "--out", str(out)]) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 4 and all(line["mode"] == "split" for line in lines)
    printed = capsys.readouterr().out
    assert "splitrt demo" in printed and "stopped cleanly" in printed
