"""Broker faults (issue 16, item 6): the broker stops for 30 s and comes back, twice, mid-run.

With ``quick``: one outage of 15 s. The scenario owns its broker (``ctx.broker``, a LocalBroker nobody else uses): it stops it
with the daemon and the feeder running, waits ``down_s``, checks the daemon is still alive
and restarts it on the same ports and data. The daemon must never exit, and the
accounting must hold: the feeder's records wait in its producer meanwhile, and the
daemon's unacknowledged batch goes back to its last checkpoint and is read again.
"""

from __future__ import annotations

import time

from streamvae.testing.proof import Context, Outcome
from streamvae.testing.proof.run import Run


def run(ctx: Context, outages: int | None = None, down_s: float | None = None) -> Outcome:
    """``--quick``: one outage of 15 s (the test command's); else two of 30 s."""
    if ctx.broker is None:
        raise ValueError("the broker-fault scenario needs a broker of its own to stop (Context.broker)")
    outages = outages if outages is not None else (1 if ctx.quick else 2)
    down_s = down_s if down_s is not None else (15.0 if ctx.quick else 30.0)
    r = Run(ctx, "brokerfaults", partitions=3, entities=30, steps_per_s=20.0)
    r.feeder.start()
    d = r.start()
    alive_after: list[bool] = []
    for _ in range(outages):
        time.sleep(10.0 if ctx.quick else 20.0)
        ctx.broker.stop()
        time.sleep(down_s)
        alive_after.append(d.proc.poll() is None)
        ctx.broker.restart()
    time.sleep(10.0)
    out = r.reckon(d, catch_up_s=300.0)
    out.notes.update(outages=outages, down_s=down_s, alive_after_each_outage=alive_after)
    return out
