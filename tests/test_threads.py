"""The thread policy and tail instances: how many threads, and that instances really run at once."""

from __future__ import annotations

import threading
from collections import OrderedDict

import pytest
import torch

from splitrt.models.base import FrameMeta
from splitrt.server.repository import ServedModel
from splitrt.threads import apply_threads, edge_threads, is_loopback_target, server_threads

from .conftest import TINY_CLASSIFIER


def test_server_threads_leave_a_core_and_share_the_rest_among_instances():
    assert server_threads(1, cores=2) == 1
    assert server_threads(1, cores=16) == 15
    assert server_threads(3, cores=16) == 5
    assert server_threads(8, cores=4) == 1  # never zero


def test_edge_threads_halve_the_cores_only_when_a_local_server_computes_at_the_same_time():
    assert edge_threads("10.0.0.5:8001", in_flight=4, cores=4) == 4  # a device of its own
    assert edge_threads("127.0.0.1:8001", in_flight=1, cores=4) == 4  # head and tail take turns
    assert edge_threads("127.0.0.1:8001", in_flight=4, cores=4) == 2
    assert edge_threads("[::1]:8001", in_flight=2, cores=2) == 1


@pytest.mark.parametrize(
    "target,local",
    [("127.0.0.1:1", True), ("127.3.2.1:5", True), ("[::1]:8001", True), ("dns:///localhost:80", True),
     ("server.example:8001", False), ("[2001:db8::1]:8001", False), ("10.1.1.1:8001", False)],
)  # fmt: skip
def test_loopback_targets(target, local):
    assert is_loopback_target(target) is local


def test_apply_threads_sets_torch_and_zero_keeps_its_default():
    before = torch.get_num_threads()
    try:
        assert apply_threads(1) == 1 and torch.get_num_threads() == 1
        assert apply_threads(0) == 1  # 0: left as it is
        with pytest.raises(ValueError):
            apply_threads(-1)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("instances", [1, 2])
def test_tail_instances_run_frames_at_the_same_time(instances, monkeypatch):
    """Two frames whose tails each wait for the other: only two instances let both finish."""
    served = ServedModel(TINY_CLASSIFIER, instances=instances)
    both_running = threading.Barrier(2, timeout=5)

    def tail(features, meta, split):
        both_running.wait()
        return {"logits": torch.zeros(1, 10)}

    monkeypatch.setattr(served.model, "tail", tail)
    features = OrderedDict(x=torch.zeros(1, 3, 8, 8))
    meta = FrameMeta((8, 8), (8, 8), (8, 8))
    futures = [served.tail_worker.submit(served.tail, features, meta, "layer1") for _ in range(2)]
    errors = [f.exception(timeout=10) for f in futures]
    served.close()
    if instances == 2:
        assert errors == [None, None]
    else:  # one worker: the first tail waits alone until the barrier gives up
        assert isinstance(errors[0], threading.BrokenBarrierError)
