"""QSD (Yue et al. 2021) as the stealing paper adapts it: no synthetic data; the clone learns
from the target model's top-K lists of the known target users only (hinge + hinge)."""

from attacks.stealing.base import StealingRun


def steal(run: StealingRun):
    return run.query_only()
