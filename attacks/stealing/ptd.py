"""PTD (section 4.1): the clone trained with BPR on the available (partial) target data."""

from attacks.stealing.base import StealingRun


def steal(run: StealingRun):
    return run.pretrained(fused=False)
