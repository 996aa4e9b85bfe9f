"""A set that remembers only its newest ``size`` members (insertion order).

>>> s = BoundedSet(2)
>>> for k in ("a", "b", "c"):
...     s.add(k)
>>> "a" in s, "c" in s, len(s)
(False, True, 2)
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Hashable


class BoundedSet:
    """The newest ``size`` keys added; adding a key again makes it the newest."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._d: OrderedDict[Hashable, None] = OrderedDict()

    def add(self, k: Hashable) -> None:
        self._d[k] = None
        self._d.move_to_end(k)
        if len(self._d) > self.size:
            self._d.popitem(last=False)

    def __contains__(self, k: object) -> bool:
        return k in self._d

    def __len__(self) -> int:
        return len(self._d)
