"""The one interface of every implicit-feedback top-K recommender (``RankingModel``).

A model holds user and item embeddings (``user_emb``, ``item_emb``) and possibly more parameters.
What a trainer and an evaluator need from it:

* ``score(users, items)`` for aligned ids and ``score_all(users)`` ([B, M], every item);
* how it is trained (``native_loss``): ``"bpr"`` / ``"logistic"`` (a generic sampled pairwise
  objective on ``score``), ``"model"`` (its own mini-batch objective ``training_loss``, e.g.
  graph models with contrastive terms), ``"rows"`` (its own loss ``row_loss`` of whole user rows,
  batches of users) or ``"als"`` (closed-form sweeps, ``als_sweep``);
* ``bind(train)``: the training interactions (graph models build their adjacency from them,
  ALS models their confidence rows); ``begin_epoch(generator)``: per-epoch randomness (views);
* Θ for central mode: the item-side parameters (``shared_parameter_names``).
"""

from __future__ import annotations

import torch

from recsys.data.dataset import Interactions
from recsys.models.ncf import init_user_embeddings

USER_SIDE = ("user_emb", "user_bias")  # parameters that stay with the client in central mode
NATIVE_LOSSES = ("bpr", "logistic", "model", "rows", "als")


class RankingModel(torch.nn.Module):
    """User and item embeddings p, q (N(0, 0.01²), as the NCF code initialises them) and a scorer."""

    native_loss = "bpr"  # how the model is trained as a victim / target (one of NATIVE_LOSSES)

    def __init__(self, num_users: int, num_items: int, dim: int, generator: torch.Generator) -> None:
        super().__init__()
        self.num_users, self.num_items, self.dim = num_users, num_items, dim
        self.user_emb = torch.nn.Parameter(init_user_embeddings(num_users, dim, generator))
        self.item_emb = torch.nn.Parameter(init_user_embeddings(num_items, dim, generator))

    @property
    def device(self) -> torch.device:
        """Where the parameters live; ``bind`` builds its tensors there (move the model before binding)."""
        return self.user_emb.device

    def bind(self, train: Interactions) -> None:
        """Attach the training interactions (rows = this model's users); default: nothing to build."""
        if train.num_users != self.num_users:
            raise ValueError(f"training data has {train.num_users} users, the model {self.num_users}")

    def begin_epoch(self, generator: torch.Generator) -> None:
        """Draw the per-epoch randomness of the objective (default: none)."""

    def representations(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The user and item vectors that scores are computed from (default: the embeddings)."""
        return self.user_emb, self.item_emb

    def pair_scores(self, users: torch.Tensor, items: torch.Tensor, user_vecs: torch.Tensor,
                    item_vecs: torch.Tensor) -> torch.Tensor:
        """r for aligned ids ``users``, ``items`` [...] scored with the given vectors [..., d] (dot product)."""
        return (user_vecs * item_vecs).sum(-1)

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """r_ij for aligned ``users`` and ``items``."""
        user_vecs, item_vecs = self.representations()
        return self.pair_scores(users, items, user_vecs[users], item_vecs[items])

    @torch.no_grad()
    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        """r_ij of every item j for each of ``users`` ([B, M])."""
        user_vecs, item_vecs = self.representations()
        return user_vecs[users] @ item_vecs.T

    def training_loss(self, users: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        """The model's own objective on a batch (``native_loss == "model"`` only)."""
        raise NotImplementedError(f"{type(self).__name__} is trained with the {self.native_loss!r} loss")

    def row_loss(self, users: torch.Tensor) -> torch.Tensor:
        """The model's own loss of the whole rows of ``users`` (``native_loss == "rows"`` only)."""
        raise NotImplementedError(f"{type(self).__name__} is trained with the {self.native_loss!r} loss")


def shared_parameter_names(module: torch.nn.Module) -> list[str]:
    """Names of ``module``'s item-side parameters: all but the user embeddings and biases."""
    return [name for name, _ in module.named_parameters() if name.rsplit(".", 1)[-1] not in USER_SIDE]
