"""PTAQ (Algorithm 1): the PTA clone (attention-fused) fine-tuned on the queried lists with L_S."""

from attacks.stealing.base import StealingRun


def steal(run: StealingRun):
    return run.finetuned(run.pretrained(fused=True), "ptaq")
