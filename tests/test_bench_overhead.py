"""`splitrt bench overhead` runs end to end (tiny: few frames, one setting) and reports sane figures."""

from __future__ import annotations

import json

from splitrt.cli import main


def test_bench_overhead_compares_splitrt_with_a_bare_stream(tmp_path, capsys):
    out = tmp_path / "overhead.json"
    flags = ["--frames", "24", "--setting", "new defaults", "--rounds", "2", "--out", str(out)]
    code = main(["bench", "overhead", *flags])
    assert code == 0
    result = json.loads(out.read_text())
    row = result["rows"][0]
    assert row["setting"] == "new defaults" and row["rounds"] == 2
    assert row["one"]["frames"] == 24 and row["many"]["frames"] == 24
    assert row["one"]["overhead_p50_ms"] > 0 and row["one"]["p50_ms"] > row["one"]["overhead_p50_ms"]
    assert row["request_bytes"] > 500 and row["response_bytes"] > 100
    assert result["bare"]["1"]["p50_ms"] > 0 and result["bare"]["4"]["fps"] > 0
    hop = result["bare_with_worker_hop"]
    assert hop["work_ms"] > 1 and hop["p50_ms"] >= hop["work_ms"]
    floor = result["bare_with_tail"]  # the same frames' decode and tail, inline on a bare stream
    assert floor["frames"] == 24 and 0 < floor["over_work_p50_ms"] <= floor["over_work_p99_ms"]
    assert 0 < floor["with_head_over_work_p50_ms"] <= floor["with_head_over_work_p99_ms"]
    assert "bare grpc.aio stream" in capsys.readouterr().out
