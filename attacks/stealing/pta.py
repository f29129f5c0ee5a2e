"""PTA (section 4.2): PTD with the clone's item embeddings fused with the auxiliary model's
by the user-conditioned attention of eqs. 5–8."""

from attacks.stealing.base import StealingRun


def steal(run: StealingRun):
    return run.pretrained(fused=True)
