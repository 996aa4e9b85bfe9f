"""Static membership ids: stable across a restart of the same slot, unique among live daemons."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from streamvae.service.instance import claim


def test_live_daemons_get_distinct_slots_and_a_freed_slot_is_taken_again(tmp_path: Path) -> None:
    a = claim("auto", "g", host="h", where=tmp_path)
    b = claim("auto", "g", host="h", where=tmp_path)
    other_group = claim("auto", "g2", host="h", where=tmp_path)
    assert (a.value, b.value, other_group.value) == ("h-0", "h-1", "h-0")
    a.release()
    assert claim("auto", "g", host="h", where=tmp_path).value == "h-0"


def test_a_killed_process_leaves_its_slot_to_its_restart(tmp_path: Path) -> None:
    code = ("import sys, time; from pathlib import Path; from streamvae.service.instance import claim; "
            f"i = claim('auto', 'g', host='h', where=Path({str(tmp_path)!r})); print(i.value, flush=True); time.sleep(60)")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "h-0"
    assert claim("auto", "g", host="h", where=tmp_path).value == "h-1"  # held while it lives
    p.kill()
    p.wait()
    assert claim("auto", "g", host="h", where=tmp_path).value == "h-0"


def test_none_is_dynamic_and_an_explicit_id_is_used_as_is(tmp_path: Path) -> None:
    assert claim("none", "g", where=tmp_path).value is None
    assert claim("plant-a-1", "g", where=tmp_path).value == "plant-a-1"
