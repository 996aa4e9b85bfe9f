"""streamvae.testing.benchtools: where the cores go, read from /proc."""

from __future__ import annotations

import os
import socket
import time

from streamvae.testing.benchtools import CpuWatch, listening_pid, machine_busy_s


def test_listening_pid_finds_this_process_and_nothing_on_a_closed_port() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert listening_pid(port) == os.getpid()
    assert listening_pid(port) is None


def test_a_busy_loop_shows_as_about_one_core_and_the_rest_adds_up() -> None:
    w = CpuWatch({"me": os.getpid(), "nobody": None})
    busy0 = machine_busy_s()
    w.start()
    t_end = time.perf_counter() + 0.5
    while time.perf_counter() < t_end:
        pass
    got = w.stop()
    assert machine_busy_s() > busy0
    assert 0.3 < got["me"] <= 1.1  # one thread spinning; a loaded machine may lend it less than a core
    assert got["nobody"] != got["nobody"]  # NaN: no pid
    cores = os.cpu_count() or 1
    assert 0.0 <= got["other"] <= cores and 0.0 <= got["idle"] <= cores
    assert got["me"] + got["other"] + got["idle"] <= cores + 0.2  # clock ticks are 10 ms
    assert 0.5 <= w.seconds < 5
