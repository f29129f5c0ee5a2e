"""Which client strategy drives which clients (``--client-strategy SPEC[@IDS]``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class StrategyAssignment:
    """A strategy spec and the client ids it drives (``None``: every client not claimed by another)."""

    spec: str
    clients: tuple[int, ...] | None

    @classmethod
    def parse(cls, text: str) -> StrategyAssignment:
        """``SPEC`` or ``SPEC@IDS`` with IDS like ``0-99,250``."""
        spec, sep, ids = text.partition("@")
        if not sep:
            return cls(spec, None)
        clients: list[int] = []
        for part in ids.split(","):
            lo, dash, hi = part.strip().partition("-")
            try:
                clients.extend(range(int(lo), int(hi) + 1) if dash else [int(lo)])
            except ValueError:
                raise ValueError(f"bad client id list {ids!r} in {text!r}: expected e.g. 0-99,250") from None
        return cls(spec, tuple(sorted(set(clients))))

    def __str__(self) -> str:
        if self.clients is None:
            return self.spec
        return f"{self.spec}@{len(self.clients)} clients {self.clients[0]}..{self.clients[-1]}" if self.clients else self.spec


def strategy_specs(assignments: tuple[StrategyAssignment, ...]) -> list[str]:
    """The strategies in use; index 0 drives every client no assignment claims (honest by default)."""
    defaults = [a.spec for a in assignments if a.clients is None]
    if len(defaults) > 1:
        raise ValueError(f"several default client strategies given: {defaults}; give ids with SPEC@IDS")
    return [defaults[0] if defaults else "honest"] + [a.spec for a in assignments if a.clients is not None]


def assign_strategies(assignments: tuple[StrategyAssignment, ...], num_clients: int) -> np.ndarray:
    """Each client's index into ``strategy_specs(assignments)`` (a later assignment wins)."""
    index = np.zeros(num_clients, dtype=np.int64)
    explicit = [a for a in assignments if a.clients is not None]
    for position, assignment in enumerate(explicit, start=1):
        ids = np.asarray(assignment.clients, dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= num_clients):
            raise ValueError(f"client ids of {assignment} are out of range: the population has clients "
                             f"0..{num_clients - 1}")
        index[ids] = position
    return index
