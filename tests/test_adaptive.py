"""Traces, estimators, the controller and the virtual-time simulator (no processes, no model)."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from splitrt.adapt.controller import AdaptiveController
from splitrt.adapt.estimators import BandwidthEstimator, Estimates, LinkEstimator
from splitrt.adapt.experiment import best_static, contention_schedule, run_experiment
from splitrt.adapt.profile import ConfigProfile, Configuration, Profile
from splitrt.adapt.simulate import Scenario, Simulator
from splitrt.channel.traces import Link, Trace, TraceError

TRACES = Path(__file__).resolve().parents[2] / "shared" / "traces" / "cellular-uplink"


def entry(split, codec, head, nbytes, tail, acc, width=None, size=None) -> ConfigProfile:
    config = Configuration(split, codec, width, size)
    return ConfigProfile(config, head, head * 1.1, nbytes, nbytes * 1.1, tail, acc, [int(nbytes)] * 4)


def toy_profile() -> Profile:
    """A device where local is slow but accurate, a cheap local model is fast, and splits trade bytes for mAP."""
    configs = [
        entry("local", "local", 400.0, 0, 0, 75.0),
        entry("local", "local", 60.0, 0, 0, 50.0, size=80),
        entry("input", "jpeg:90", 5.0, 7500, 10.0, 73.0),
        entry("features.6/slim", "entropy", 50.0, 400, 8.0, 70.0, width=0.25),
        entry("features.6/slim", "entropy", 50.0, 650, 8.0, 73.2, width=1.0),
    ]
    return Profile("toy", "0" * 16, {"kind": "hand-made for tests"}, 0, configs)


def estimates(bps: float | None, load: float = 1.0) -> Estimates:
    """A steady link: the last 20 frames of 650 B all took bytes / bandwidth."""
    transfers = ((650.0, 650 * 8 / bps),) * 20 if bps else ()
    return Estimates(
        bandwidth_bps=bps, rtt_s=0.04, jitter_s=0.0, device_load=load, server_queue_s=0.0, transfers=transfers
    )


def best_unhedged_remote(rows):
    return best_static([r for r in rows if not r["policy"].endswith("+hedge")], remote_only=True)


# -- traces -------------------------------------------------------------------------------------
def test_mahimahi_parsing_and_rate():
    # 3 packets at ms 0, one at ms 1, one at ms 4 = the period, which wraps to ms 0 of the next loop
    trace = Trace.from_mahimahi("0\n0\n0\n1\n4\n")
    assert trace.duration_s == pytest.approx(0.004)
    assert trace.period_bytes == 7500
    assert trace.mean_mbps == pytest.approx(7500 * 8 / 1e6 / 0.004)
    assert trace.delivered(0.001) == 6000
    assert trace.delivered(0.0005) == 3000  # uniform within a millisecond
    # looping: the second period delivers the same again
    assert trace.delivered(0.008) == 15000
    assert trace.finish_time(0.0, 6000) == pytest.approx(0.001)
    assert trace.finish_time(0.0, 7500 + 6000) == pytest.approx(0.005)
    with pytest.raises(TraceError, match="integer millisecond"):
        Trace.from_mahimahi("0\nabc\n")
    with pytest.raises(TraceError, match="non-decreasing"):
        Trace.from_mahimahi("5\n3\n")


def test_csv_and_constant_and_outages(tmp_path):
    path = tmp_path / "link.csv"
    path.write_text("time_s,mbps\n0,8\n1,0\n2,4\n")
    trace = Trace.load(path)
    assert trace.duration_s == pytest.approx(3.0)
    assert trace.capacity(0, 1) == pytest.approx(1e6)
    assert trace.capacity(1, 2) == 0
    assert trace.capacity(2, 3) == pytest.approx(0.5e6)
    # a payload started inside the outage waits for it to end
    assert trace.finish_time(1.0, 0.5e6) == pytest.approx(3.0)
    const = Trace.constant(8.0, 10)
    assert const.finish_time(2.5, 1e6) == pytest.approx(3.5)
    cut = const.with_outages([(1.0, 2.0)])
    assert cut.capacity(1.0, 3.0) == 0 and cut.capacity(0, 1) == pytest.approx(1e6)
    with pytest.raises(TraceError, match="does not exist"):
        Trace.load(tmp_path / "missing.up")


def test_gilbert_elliott_is_deterministic_and_bursty():
    base = Trace.constant(10.0, 60)
    a = base.gilbert_elliott(0.05, 0.3, seed=1)
    b = base.gilbert_elliott(0.05, 0.3, seed=1)
    assert np.array_equal(a.ms_bytes, b.ms_bytes)
    windows = a.windows_mbps(0.1)
    assert (windows == 0).any() and (windows > 9.9).any()
    assert a.mean_mbps < base.mean_mbps


@pytest.mark.skipif(not TRACES.is_dir(), reason="../shared/traces not beside the checkout")
def test_shared_traces_match_their_readme():
    expected = {
        "ATT-LTE-driving-2016.up": (120, 1.91),
        "ATT-LTE-driving.up": (1012, 0.83),
        "TMobile-LTE-short.up": (140, 13.3),
        "Verizon-EVDO-driving.up": (1065, 0.84),
    }
    for name, (seconds, mean) in expected.items():
        trace = Trace.load(TRACES / name)
        assert trace.duration_s == pytest.approx(seconds, abs=1)
        assert trace.mean_mbps == pytest.approx(mean, rel=0.02)


def test_link_queues_frames_fifo():
    link = Link(Trace.constant(8.0, 10), one_way_delay_s=0.01)
    first = link.send(0.0, 100_000)  # 0.1 s on the wire
    second = link.send(0.05, 100_000)  # waits for the first
    assert first == pytest.approx(0.11)
    assert second == pytest.approx(0.21)
    assert link.peek(0.3, 100_000) == pytest.approx(0.41)
    assert link.free_at == pytest.approx(0.2)


# -- estimators -----------------------------------------------------------------------------------
def test_bandwidth_estimate_tracks_the_link_and_losses_do_not_drag_it():
    est = BandwidthEstimator()
    for _ in range(5):  # 10 kB in 80 ms of transfer + 40 ms base RTT + 10 ms server = 1 Mbit/s
        est.observe(10_000, 0.080 + 0.040 + 0.010, 0.010)
        est.observe(200, 0.040 + 0.010, 0.010)  # small frames set the base RTT
    assert est.base_rtt_s == pytest.approx(0.040)
    assert est.predict() == pytest.approx(1e6, rel=0.35)


def test_losses_lower_the_chance_of_arriving_and_mark_the_link_down():
    link = LinkEstimator()
    for _ in range(5):
        link.answered(10_000, 0.080 + 0.040 + 0.010, 0.010)
    before = link.snapshot()
    assert before.p_within(10_000, 0.1) > 0.8
    link.timed_out(10_000, 1.0, 0.010, pending=True)  # a hedged frame: judged when its answer comes
    assert link.snapshot().p_within(10_000, 0.1) == pytest.approx(before.p_within(10_000, 0.1))
    link.lost(10_000, 1.0, 0.010)  # it never came
    link.timed_out(10_000, 1.0, 0.010)
    link.timed_out(10_000, 1.0, 0.010)
    assert not link.snapshot().link_down  # three late frames in a row, but an answer came just now
    link.tick(1.5)  # ... and nothing since: an outage
    after = link.snapshot()
    assert after.link_down and after.p_within(10_000, 0.1) == 0.0
    assert after.bandwidth_bps == pytest.approx(before.bandwidth_bps)  # a loss is no throughput sample
    link.tick(60.0)  # a minute later, nothing recent is known: neither yes nor no
    link.probe_answered(0.05)
    assert link.snapshot().p_within(10_000, 0.1) is None


def test_a_ping_after_one_late_frame_keeps_what_the_frames_measured():
    """Only an outage resets the link's estimates; a slow frame followed by a ping is no outage."""
    link = LinkEstimator()
    for i in range(10):
        link.tick(i * 0.2)
        link.answered(3_000, 0.040 + 0.024 + 0.028, 0.028)
    link.timed_out(3_000, 0.130, 0.028, pending=True)
    link.probe_answered(0.045)
    assert len(link.transfers.samples) == 10 and link.snapshot().p_within(3_000, 0.06) > 0.9


def test_losses_from_an_outage_do_not_judge_the_link_after_it():
    link = LinkEstimator()
    link.answered(3_000, 0.1, 0.028)
    for i in range(4):  # frames sent into an outage, unanswered
        link.tick(1.0 + 0.2 * i)
        link.timed_out(3_000, 0.130, 0.028, pending=True)
    link.tick(3.0)
    assert link.link_down
    link.probe_answered(0.045)  # the link is back
    assert not link.link_down
    link.lost(3_000, 5.0, 0.028, sent_at=1.0)  # the outage's victims settle afterwards
    link.answered(3_000, 2.5, 0.028, sent_at=1.4)
    assert link.snapshot().transfers == () and link.snapshot().p_within(3_000, 0.1) is None
    link.lost(3_000, 5.0, 0.028, sent_at=3.5)  # one sent after it does count
    assert len(link.snapshot().transfers) == 1


def test_device_load_follows_contention_not_one_slow_run():
    from splitrt.adapt.estimators import DeviceLoadEstimator

    load = DeviceLoadEstimator(cpu_sampling=False)
    for ratio in [1.0, 0.9, 1.1, 1.0, 1.05, 0.95, 1.0, 1.0]:
        load.observe(100.0 * ratio, 100.0)
    load.observe(300.0, 100.0)  # one slow draw
    assert load.value == pytest.approx(1.0, abs=0.06)
    for _ in range(10):  # contention: every run twice as slow
        load.observe(200.0, 100.0)
    assert load.value == pytest.approx(2.0)


def test_runs_too_short_to_time_say_nothing_about_the_device_load():
    from splitrt.adapt.estimators import DeviceLoadEstimator

    load = DeviceLoadEstimator(cpu_sampling=False)
    for _ in range(15):  # JPEG encodes profiled at 0.5 ms that waited for the GIL
        load.observe(9.0, 0.5)
    assert load.value == 1.0
    for _ in range(10):
        load.observe(200.0, 100.0)
    assert load.value == pytest.approx(2.0)


# -- controller -------------------------------------------------------------------------------------
def slow_device_profile() -> Profile:
    """A device 16x slower than the server: its exit takes about the deadline, only JPEG offload is quick."""
    configs = [
        ConfigProfile(Configuration("local", "local", None, None, "features.6"), 140.0, 200.0, 0, 0, 0, 74.0, []),
        entry("input", "jpeg:50", 11.0, 2600, 28.0, 62.0),
    ]
    return Profile("slow", "0" * 16, {"kind": "hand-made for tests"}, 0, configs)


def test_an_exit_that_only_sometimes_makes_the_deadline_hedges_the_offload_and_is_preferred():
    profile = slow_device_profile()
    exit_, jpeg = profile["exit@features.6"], profile["offload/jpeg:50"]
    controller = AdaptiveController(profile, deadline_ms=130)
    decision = controller.decide(0.0, estimates(2e6))
    assert decision.name == "offload/jpeg:50" and decision.fallback.name == "exit@features.6"
    assert decision.patience_ms is None  # the better local result is waited for until the deadline
    # the same rule in the simulator: the exit when it is done in time, else the answer already in hand
    scenario = Scenario(profile, Trace.constant(2.0, 20), deadline_ms=130, fps=5)
    sim = Simulator(scenario)
    from splitrt.adapt.simulate import Plan

    outcomes = [sim.play(i, 0.0, 0.0, Plan(jpeg.name, exit_.name)) for i in range(sim.frames)]
    quick = [o for o in outcomes if o.mode == "fallback"]
    assert quick and all(o.local_first and o.hit and o.delivered.name == exit_.name for o in quick)
    answered = [o for o in outcomes if o.mode == "remote"]
    assert answered and all(o.hit and o.latency_ms == pytest.approx(130 - 3, abs=0.01) for o in answered)
    # run end to end, it beats both of its parts alone, and no exit win counts as a late frame
    runs = {p: sim.run(p) for p in ("static:offload/jpeg:50+hedge", "static:offload/jpeg:50", "static:exit@features.6")}
    value = {p: r.summary(130)["accuracy_in_time"] for p, r in runs.items()}
    assert value["static:offload/jpeg:50+hedge"] > max(value["static:offload/jpeg:50"], value["static:exit@features.6"])
    assert runs["static:offload/jpeg:50+hedge"].summary(130)["timeouts"] == 0


def test_controller_goes_local_without_bandwidth_and_best_with_plenty():
    profile = toy_profile()
    zero = AdaptiveController(profile, deadline_ms=200)
    assert zero.decide(0.0, estimates(0.0)).config.config.remote is False
    assert zero.decide(0.0, estimates(0.0)).name == "local@80"  # the only local that fits
    plenty = AdaptiveController(profile, deadline_ms=200)
    assert plenty.decide(0.0, estimates(1e12)).name == "features.6/slim/entropy@1"
    # an unreachable deadline: the frame is skipped (and reported), not run late
    tight = AdaptiveController(profile, deadline_ms=1)
    decision = tight.decide(0.0, estimates(1e12))
    assert decision.reason.startswith("skip") and decision.name == "skip" and decision.config is None


def test_controller_counts_device_load_and_the_latency_objective():
    profile = toy_profile()
    busy = AdaptiveController(profile, deadline_ms=200)
    assert busy.decide(0.0, estimates(1e12, load=4.0)).name == "offload/jpeg:90"  # heads are 4x slower
    fast = AdaptiveController(profile, deadline_ms=200, objective="latency", accuracy_floor=72.0)
    assert fast.decide(0.0, estimates(1e12)).name == "offload/jpeg:90"
    with pytest.raises(ValueError, match="accuracy floor"):
        AdaptiveController(profile, deadline_ms=200, objective="latency")


def test_hysteresis_bounds_switching_on_an_oscillating_link():
    """A move to the link without a local safety net waits: here no local model fits after a head."""
    profile = toy_profile()
    profile.configs[1] = entry("local", "local", 160.0, 0, 0, 50.0, size=80)  # alone it fits 200 ms
    controller = AdaptiveController(profile, deadline_ms=200, up_after_s=2.0, split_up_after_s=5.0, hedge=False)
    names = []
    for step in range(600):  # 60 s at 10 decisions/s; the link flips every 0.5 s between good and bad
        t = step / 10
        good = (step // 5) % 2 == 0
        names.append(controller.decide(t, estimates(2e6 if good else 5e4)).name)
    switches = sum(1 for a, b in zip(names, names[1:]) if a != b)
    # one step down; then only the explorations (after 10, 20 and 40 s of local-only) and their
    # step downs: never long enough on the good phase to step up by the estimate
    assert switches <= 7, names
    assert switches / 1.0 < 10  # per minute
    naive = AdaptiveController(profile, deadline_ms=200, up_after_s=0.0, split_up_after_s=0.0, hedge=False)
    naive_names = [naive.decide(s / 10, estimates(2e6 if (s // 5) % 2 == 0 else 5e4)).name for s in range(600)]
    assert sum(1 for a, b in zip(naive_names, naive_names[1:]) if a != b) > 50


# -- simulator ------------------------------------------------------------------------------------------
def outage_trace() -> Trace:
    return Trace.constant(2.0, 60).with_outages([(20.0, 10.0)])


def test_simulator_is_deterministic():
    scenario = Scenario(toy_profile(), outage_trace(), deadline_ms=200, fps=5)
    first = Simulator(scenario).run("adaptive")
    second = Simulator(scenario).run("adaptive")
    assert [f.__dict__ for f in first.frames] == [f.__dict__ for f in second.frames]


def test_simulated_outage_adaptive_vs_static_vs_oracle():
    scenario = Scenario(toy_profile(), outage_trace(), deadline_ms=200, fps=5)
    rows, runs = run_experiment(scenario, progress=False)
    by = {r["policy"]: r for r in rows}
    assert all(r["frames"] == 300 for r in rows)  # every frame accounted for in every policy
    static = best_unhedged_remote(rows)
    assert static["hit_rate"] < 0.9  # the outage defeats every static remote configuration
    assert by["adaptive"]["hit_rate"] >= 0.99
    assert by["adaptive"]["fallbacks"] >= 1
    assert by["oracle"]["accuracy_in_time"] >= by["adaptive"]["accuracy_in_time"]
    assert by["adaptive"]["accuracy_in_time"] >= 0.9 * by["oracle"]["accuracy_in_time"]
    modes = {f.mode for f in runs["adaptive"].frames[100:150]}  # inside the outage
    assert modes <= {"local", "fallback"}
    assert by["static:local"]["hit_rate"] == 0.0  # 400 ms local never meets 200 ms


def test_contention_schedule_slows_the_head():
    load = contention_schedule("10:20:3")
    assert load(5) == 1.0 and load(15) == 3.0 and load(25) == 1.0
    profile = toy_profile()
    scenario = Scenario(profile, Trace.constant(2.0, 30), deadline_ms=200, fps=5, load=load)
    frames = Simulator(scenario).run("adaptive").frames
    # under 3x load the 50 ms head + transfer no longer fits: the controller moves to JPEG offload
    assert {f.config for f in frames[60:100]} & {"offload/jpeg:90"}
    assert math.isfinite(frames[-1].latency_ms)


def test_trace_specs():
    from splitrt.channel.traces import open_trace

    assert open_trace("constant:4:10").mean_mbps == pytest.approx(4.0)
    bursty = open_trace("constant:4:60", gilbert_elliott="0.1:0.3")
    assert bursty.mean_mbps < 4.0
    with pytest.raises(TraceError, match="constant:MBPS"):
        open_trace("constant:fast")


# -- hedged frames --------------------------------------------------------------------------------------
def test_transfer_spread_gives_the_chance_of_arriving_in_time():
    from splitrt.adapt.estimators import p_within

    samples = ((500.0, 0.010),) * 6 + ((500.0, 0.200),) * 2 + ((500.0, math.inf),) * 2
    assert p_within(samples, 500, 0.050, 1e6) == pytest.approx((6 + 0.5) / (10 + 1))
    assert p_within(samples, 500, 0.300, 1e6) == pytest.approx((8 + 0.5) / 11)
    # 10 kB more at 1 Mbit/s adds 80 ms to every sample's wait
    assert p_within(samples, 10_500, 0.050, 1e6) == pytest.approx(0.5 / 11)
    assert p_within((), 500, 0.050, 1e6) == pytest.approx(0.5)  # nothing known: neither yes nor no


def test_controller_hedges_when_a_local_model_fits_after_the_head():
    profile = toy_profile()
    controller = AdaptiveController(profile, deadline_ms=200)
    decision = controller.decide(0.0, estimates(2e6))
    assert decision.config.config.remote and decision.fallback is not None
    assert decision.fallback.name == "local@80"  # 50 ms head + 60 ms local fit in 200 ms
    assert decision.as_dict()["hedge"] == "local@80" and decision.p_in_time > 0.9
    # a link that is down: nothing goes out, the local model runs
    dead = replace(estimates(2e6), transfers=((650.0, math.inf),) * 25, link_down=True)
    assert AdaptiveController(profile, deadline_ms=200).decide(0.0, dead).name == "local@80"
    # one on which nothing arrived lately: the hedge is still sent (it cannot miss), valued honestly
    lossy = AdaptiveController(profile, deadline_ms=200).decide(0.0, replace(dead, link_down=False))
    assert lossy.fallback.name == "local@80"
    p = lossy.p_in_time  # the 650 B losses are censored for a smaller payload, not counted against it
    assert lossy.expected_map == pytest.approx(p * lossy.config.map + (1 - p) * 50.0, abs=0.01)
    # at 100 ms the local model fits after the 5 ms JPEG head, not after the 50 ms split head
    tight = AdaptiveController(profile, deadline_ms=100)
    assert tight.hedge_for(profile["features.6/slim/entropy@1"], estimates(2e6)) is None
    decision = tight.decide(0.0, estimates(2e6))
    assert decision.name == "offload/jpeg:90" and decision.fallback.name == "local@80"
    assert AdaptiveController(profile, deadline_ms=200, hedge=False).decide(0.0, estimates(2e6)).fallback is None


def test_hedged_frames_meet_the_deadline_on_a_bursty_link():
    trace = Trace.constant(1.0, 120).with_outages([(t, 0.7) for t in range(5, 115, 3)])
    scenario = Scenario(toy_profile(), trace, deadline_ms=200, fps=5)
    rows, runs = run_experiment(scenario, progress=False)
    by = {r["policy"]: r for r in rows}
    assert best_unhedged_remote(rows)["hit_rate"] < 0.9  # the gaps defeat every static remote configuration
    frames = runs["adaptive"].frames
    hedged = [f for f in frames if f.mode == "fallback"]
    assert hedged and all(f.hit and f.accuracy == 50.0 for f in hedged)  # the local result, in time
    assert {f.mode for f in frames} >= {"remote", "fallback"}
    assert by["adaptive"]["hit_rate"] >= 0.99
    unhedged = Simulator(scenario).run("adaptive", AdaptiveController(scenario.profile, 200, hedge=False))
    # a late fallback (waiting, then the local model) now delivers as much here; hedging is never worse
    assert by["adaptive"]["accuracy_in_time"] >= unhedged.summary(200)["accuracy_in_time"]


def test_an_early_exit_hedges_the_split_whose_head_computes_its_input():
    """After a features.6 head the exit costs only its own layers; after any other head, all of them."""
    profile = toy_profile()
    early_exit = entry("local", "local", 40.0, 0, 0, 55.0)
    early_exit = replace(
        early_exit,
        config=Configuration("local", "local", early_exit="features.6"),
        shares_input_with=["features.6/slim/entropy@0.25", "features.6/slim/entropy@1"],
        after_shared_ms=10.0,
    )
    profile.configs.append(early_exit)
    split, jpeg = profile["features.6/slim/entropy@1"], profile["offload/jpeg:90"]
    assert early_exit.name == "exit@features.6"
    assert early_exit.device_ms_after(split) == 10.0 and early_exit.device_ms_after(jpeg) == 40.0
    assert profile.scaled(8.0)["exit@features.6"].after_shared_ms == 80.0
    # 100 ms: 50 ms split head + 10 ms exit fits, + 60 ms local@80 does not
    tight = AdaptiveController(profile, deadline_ms=100)
    assert tight.hedge_for(split, estimates(2e6)).name == "exit@features.6"
    assert tight.hedge_for(profile["features.6/slim/entropy@0.25"], estimates(2e6)).name == "exit@features.6"
    assert tight.decide(0.0, estimates(2e6)).fallback.name == "exit@features.6"  # the best hedge for any head
    # in the simulator a hedged split frame whose answer is late delivers the exit's result in time
    trace = Trace.constant(1.0, 60).with_outages([(t, 0.7) for t in range(5, 55, 3)])
    run = Simulator(Scenario(profile, trace, deadline_ms=100, fps=5)).run("adaptive")
    late = [f for f in run.frames if f.mode == "fallback" and f.config.startswith("features.6")]
    assert late and all(f.hit and f.accuracy == 55.0 for f in late)
