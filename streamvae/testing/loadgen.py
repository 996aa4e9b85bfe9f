"""The Java load generator of the benchmarks (scripts/loadgen/PacedProducer.java): its
command, the file of messages it sends, and one run of it.

It is the Java Kafka client (acks=all, linger 5 ms), so that the feed takes little of the
cores the daemon and the broker share. It reads every message from a file written before
it starts (per message: partition, key, value), sends them at a fixed rate with a
``sent_us`` header (the wall clock at ``send()``), and prints one JSON line when it is
done: ``t_start_wall``, ``sent``, ``seconds``, ``cpu_s`` (its own CPU after its start-up).
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from streamvae.testing.procs import ROOT

Message = tuple[bytes, int, bytes]  # key, partition, value


def java_load_generator(work: Path, kafka_libs: Path) -> list[str]:
    """Compile PacedProducer.java against the broker's jars; the command that runs it
    (then: bootstrap, topic, rate, message file)."""
    out = work / "loadgen"
    out.mkdir(exist_ok=True)
    cp = f"{kafka_libs}/*"
    r = subprocess.run(["javac", "-cp", cp, "-d", str(out), str(ROOT / "scripts" / "loadgen" / "PacedProducer.java")],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"javac failed:\n{r.stderr[-3000:]}")
    # a small heap, the serial collector and the C1 compiler only: the generator should
    # take as little of the cores as it can
    return ["java", "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-cp", f"{out}{os.pathsep}{cp}", "PacedProducer"]


def write_messages(path: Path, msgs: Iterable[Message]) -> dict[int, int]:
    """The generator's file (per message: partition, key, value); the messages per partition."""
    counts: dict[int, int] = {}
    with open(path, "wb") as fh:
        for key, part, value in msgs:
            fh.write(struct.pack(">ii", part, len(key)) + key + struct.pack(">i", len(value)) + value)
            counts[part] = counts.get(part, 0) + 1
    return counts


def send(java: Sequence[str], bootstrap: str, topic: str, rate: float, msg_file: Path) -> subprocess.Popen[str]:
    """Start the generator (``java``: :func:`java_load_generator`'s command) on ``msg_file``."""
    return subprocess.Popen([*java, bootstrap, topic, str(rate), str(msg_file)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    """A generator's last JSON line once it exits; RuntimeError with its stderr if it failed."""
    out, err = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"load generator exited with {proc.returncode}:\n{err[-3000:]}")
    info: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return info


def with_producer(share: dict[str, float], info: dict[str, Any], seconds: float) -> dict[str, float]:
    """A ``CpuWatch`` result (streamvae/testing/benchtools.py) over ``seconds``, with the
    generator's own CPU (``info``, from its clock) moved out of ``other``."""
    producer = float(info["cpu_s"]) / seconds
    return {**share, "producer": producer, "other": max(0.0, share["other"] - producer)}
