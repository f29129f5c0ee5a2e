"""PTQ (section 4.3): the PTD clone fine-tuned on the queried top-K lists with the stealing
loss L_S = L_r + L_p (eqs. 9–12)."""

from attacks.stealing.base import StealingRun


def steal(run: StealingRun):
    return run.finetuned(run.pretrained(fused=False), "ptq")
