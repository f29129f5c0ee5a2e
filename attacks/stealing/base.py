"""What every stealing attack shares: its settings, and a run that trains (and memoises) the
stages the attacks are built from, all through the attacker's view and central mode.

Stages: the auxiliary model (BPR on the auxiliary data, for its item embeddings q^a), the
clone pre-trained with BPR on the available target data (plain, or fused with q^a by
attention), and the fine-tuning of a clone on the queried lists with the stealing loss.
"""

from __future__ import annotations

import copy
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from attacks.stealing.attention import FusedClone
from attacks.stealing.loss import MARGIN, PAIR_LOSSES, StealingObjective
from central.objectives import InteractionObjective, interaction_mask
from central.ranking_learner import fit
from central.stealing_data import AttackerView
from recsys.models.ranking import make_model, save_atomically

CLONE_MODELS = ("bpr", "ncf", "lmf")  # clone architectures: trained with BPR on score(), no graph to bind


@dataclass(frozen=True)
class StealingSettings:
    """The attacker's choices (the paper's values as defaults where it gives them)."""

    clone: str = "bpr"  # clone architecture (one of CLONE_MODELS)
    dim: int = 64
    k: int = 50  # length of the queried lists
    epochs: int = 200  # BPR epochs of the clone on the available target data
    aux_epochs: int = 60  # BPR epochs of the auxiliary model on the auxiliary data
    finetune_epochs: int = 200  # epochs on the queried lists (PTQ/PTAQ fine-tuning, QSD training)
    ranking_loss: str = "bpr"  # L_r of PTQ/PTAQ
    positive_loss: str = "hinge"  # L_p of PTQ/PTAQ
    qsd_ranking_loss: str = "hinge"
    qsd_positive_loss: str = "hinge"
    margin: float = MARGIN
    negatives: int = 1  # sampled negatives per positive
    seed: int = 0

    def __post_init__(self) -> None:
        if self.clone not in CLONE_MODELS:
            raise ValueError(f"unknown clone architecture {self.clone!r}; choose one of {', '.join(CLONE_MODELS)}")
        losses = (self.ranking_loss, self.positive_loss, self.qsd_ranking_loss, self.qsd_positive_loss)
        if any(loss not in PAIR_LOSSES for loss in losses):
            raise ValueError(f"stealing losses must be among {', '.join(PAIR_LOSSES)}, got {losses}")
        if min(self.dim, self.k, self.negatives) < 1 or min(self.epochs, self.aux_epochs, self.finetune_epochs) < 0:
            raise ValueError("dim, k and negatives must be >= 1 and epochs >= 0")


class StealingRun:
    """The stages of one attacker (view + settings); each stage is trained once and copied out.
    ``stage_file(stage)``, if given, names a file that keeps a trained stage ("auxiliary",
    "ptd", "pta") across runs with the same data and settings."""

    def __init__(self, view: AttackerView, settings: StealingSettings,
                 stage_file: Callable[[str], Path] | None = None) -> None:
        self.view, self.settings, self.stage_file = view, settings, stage_file
        self._stages: dict[str, torch.nn.Module] = {}
        self.histories: dict[str, list[dict[str, float]]] = {}

    def _seed(self, stage: str) -> int:
        return zlib.crc32(f"{self.settings.seed}/{stage}".encode())

    def _new_model(self, stage: str, num_users: int):
        return make_model(self.settings.clone, num_users, self.view.num_items, self.settings.dim,
                          torch.Generator().manual_seed(self._seed(stage)))

    def _stage(self, name: str, make: Callable[[], torch.nn.Module],
               train: Callable[[torch.nn.Module], None]) -> torch.nn.Module:
        """A copy of stage ``name``: ``make()`` trained by ``train`` (or loaded from its file)."""
        if name not in self._stages:
            module = make()
            path = self.stage_file(name) if self.stage_file is not None else None
            if path is not None and path.is_file():
                module.load_state_dict(torch.load(path, weights_only=True))
            else:
                train(module)
                if path is not None:
                    save_atomically(module, path)
            self._stages[name] = module
        return copy.deepcopy(self._stages[name])

    def _fit(self, stage: str, module: torch.nn.Module, objective, epochs: int) -> torch.nn.Module:
        self.histories[stage] = fit(module, objective, epochs, self._seed(stage))
        return module

    def _bpr(self, interactions) -> InteractionObjective:
        return InteractionObjective(interactions, self.view.num_items, "bpr", self.settings.negatives)

    def auxiliary_items(self) -> torch.Tensor:
        """q^a: item embeddings of the auxiliary model trained on the auxiliary data."""
        data = self.view.auxiliary_data()
        model = self._stage("auxiliary", lambda: self._new_model("auxiliary", data.num_users),
                            lambda m: self._fit("auxiliary", m, self._bpr(data), self.settings.aux_epochs))
        return model.item_emb.detach()

    def pretrained(self, fused: bool) -> torch.nn.Module:
        """The clone trained with BPR on the available target data (PTD; with fusion, PTA)."""
        name = "pta" if fused else "ptd"
        data = self.view.target_data()

        def make() -> torch.nn.Module:
            model = self._new_model(name, data.num_users)
            if not fused:
                return model
            return FusedClone(model, self.auxiliary_items(), torch.Generator().manual_seed(self._seed("fusion")))
        return self._stage(name, make, lambda m: self._fit(name, m, self._bpr(data), self.settings.epochs))

    def stealing_objective(self, ranking: str, positive: str) -> StealingObjective:
        interacted = interaction_mask(self.view.target_data(), self.view.num_items)
        return StealingObjective(self.view.query(self.settings.k), interacted, ranking, positive,
                                 self.settings.margin, self.settings.negatives)

    def finetuned(self, module: torch.nn.Module, stage: str) -> torch.nn.Module:
        """``module`` fine-tuned on the queried lists with L_r + L_p (PTQ, PTAQ)."""
        objective = self.stealing_objective(self.settings.ranking_loss, self.settings.positive_loss)
        return self._fit(stage, module, objective, self.settings.finetune_epochs)

    def query_only(self) -> torch.nn.Module:
        """A fresh clone trained on the queried lists only (QSD)."""
        objective = self.stealing_objective(self.settings.qsd_ranking_loss, self.settings.qsd_positive_loss)
        return self._fit("qsd", self._new_model("qsd", self.view.num_known), objective, self.settings.finetune_epochs)
