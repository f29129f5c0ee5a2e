"""The registry of implicit-feedback top-K recommenders (``MODELS``): BPR-MF, LMF and NCF here,
WRMF (ALS), WMF trained by Adam (RevAdv's WRMF victim), LightGCN, SGL and SimGCL in their own
modules, all on the ``RankingModel`` interface.

Every model scores (user, item) pairs from their embedding rows with ``pair_scores`` so that an
attacker can substitute other item embeddings (the attention fusion of PTA, eqs. 5–8), and
scores all items for a batch of users with ``score_all`` (batched matrix products + ``topk``).
Item-side parameters (Θ in central mode) are every parameter but the user-side ones
(``shared_parameter_names``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from recsys.atomic import atomic_torch_save
from recsys.models.base import RankingModel, shared_parameter_names
from recsys.models.lightgcn import LightGCN
from recsys.models.ncf import ITEM_EMBEDDING, NCFSpec, Theta, init_theta, ncf_logits, score_all_items
from recsys.models.sgl import SGL
from recsys.models.simgcl import SimGCL
from recsys.models.wmf_adam import AdamWMF
from recsys.models.wrmf import WRMF

class BPRMF(RankingModel):
    """Matrix factorisation r_ij = p_i · q_j (eq. 1) trained with the BPR loss (eq. 4)."""


class LMF(RankingModel):
    """Logistic MF (Johnson 2014): r_ij = p_i · q_j + b_i + b_j, trained as a logistic classifier
    of observed pairs against sampled unobserved ones."""

    native_loss = "logistic"

    def __init__(self, num_users: int, num_items: int, dim: int, generator: torch.Generator) -> None:
        super().__init__(num_users, num_items, dim, generator)
        self.user_bias = torch.nn.Parameter(torch.zeros(num_users))
        self.item_bias = torch.nn.Parameter(torch.zeros(num_items))

    def pair_scores(self, users, items, user_vecs, item_vecs):
        return (user_vecs * item_vecs).sum(-1) + self.user_bias[users] + self.item_bias[items]

    @torch.no_grad()
    def score_all(self, users):
        return torch.addmm(self.item_bias[None, :], self.user_emb[users], self.item_emb.T)


class NCF(RankingModel):
    """The MLP NCF of ``recsys.models.ncf`` (same Θ layout, forward and batched scoring),
    trained as a logistic classifier of observed pairs against sampled unobserved ones."""

    native_loss = "logistic"
    layers = (64, 32, 16)  # the tower of He et al. for 64-dimensional embeddings

    def __init__(self, num_users: int, num_items: int, dim: int, generator: torch.Generator,
                 layers: tuple[int, ...] | None = None) -> None:
        super().__init__(num_users, num_items, dim, generator)
        self.spec = NCFSpec(num_items, dim, tuple(layers) if layers is not None else self.layers)
        theta = init_theta(self.spec, generator)
        with torch.no_grad():
            self.item_emb.copy_(theta.pop(ITEM_EMBEDDING))
        # ParameterDict keys cannot hold dots: "mlp.0.weight" is stored as "0_weight"
        self.mlp = torch.nn.ParameterDict({name[4:].replace(".", "_"): torch.nn.Parameter(v) for name, v in theta.items()})

    def _named_mlp(self):
        for name, value in self.mlp.items():
            yield "mlp." + name.replace("_", "."), value

    def pair_scores(self, users, items, user_vecs, item_vecs):
        theta = dict(self._named_mlp())
        shape = user_vecs.shape[:-1]
        flat = ncf_logits(user_vecs.reshape(-1, self.dim), item_vecs.reshape(-1, self.dim), theta, self.spec.num_linear)
        return flat.view(shape)

    def theta(self) -> Theta:
        """Θ in the federated layout (``recsys.models.ncf``): item embeddings and MLP, detached."""
        return {ITEM_EMBEDDING: self.item_emb.detach(), **{n: v.detach() for n, v in self._named_mlp()}}

    @torch.no_grad()
    def score_all(self, users):
        return score_all_items(self.user_emb[users].detach(), self.theta(), self.spec.num_linear).clone()


@torch.no_grad()
def recommend(scorer: torch.nn.Module, users: torch.Tensor, exclude: torch.Tensor, k: int, chunk: int = 128) -> torch.Tensor:
    """Top-``k`` item ids of ``scorer.score_all`` for ``users`` ([U, k], best first), never an item
    marked in the boolean ``exclude`` [U, M] (the user's interacted items)."""
    lists = []
    for start in range(0, len(users), chunk):
        scores = scorer.score_all(users[start : start + chunk])
        scores.masked_fill_(exclude[start : start + chunk], -torch.inf)
        lists.append(scores.topk(k, dim=1).indices)
    return torch.cat(lists) if lists else torch.empty((0, k), dtype=torch.long)


def save_atomically(module: torch.nn.Module, path: Path) -> None:
    """Write ``module``'s state dict to ``path`` (readers never see half of it; concurrent writers are safe)."""
    atomic_torch_save(module.state_dict(), path)


MODELS: dict[str, type[RankingModel]] = {"bpr": BPRMF, "ncf": NCF, "lmf": LMF, "wrmf": WRMF, "wmf-adam": AdamWMF,
                                         "lightgcn": LightGCN, "sgl": SGL, "simgcl": SimGCL}

__all__ = ["MODELS", "RankingModel", "check_hyper_parameters", "hyper_parameters", "make_model", "recommend",
           "save_atomically", "shared_parameter_names"]


def hyper_parameters(name: str) -> dict[str, bool | int | float]:
    """Model ``name``'s hyper-parameters and their defaults: its numeric class attributes (``reg``, ``layers``,
    ``alpha``, ...), the ones ``make_model``'s options override."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    kind = MODELS[name]
    return {key: value for key in dir(kind) if not key.startswith("_") and not hasattr(torch.nn.Module, key)
            and isinstance(value := getattr(kind, key), (bool, int, float))}


def check_hyper_parameters(name: str, options: Mapping[str, float]) -> dict[str, bool | int | float]:
    """``options`` as model ``name``'s hyper-parameters, each of its default's type; ``ValueError`` naming an
    unknown one, or a value its type cannot hold exactly (``layers=2.5``, ``include_ego=3``)."""
    known = hyper_parameters(name)
    if unknown := [key for key in options if key not in known]:
        raise ValueError(f"model {name!r} has no hyper-parameter {', '.join(map(repr, unknown))}; "
                         f"its hyper-parameters: {', '.join(known) or 'none'}")
    converted = {key: type(known[key])(value) for key, value in options.items()}
    for key, value in options.items():  # True is not a number of layers, nor 2.5
        if converted[key] != value or (isinstance(value, bool) and not isinstance(known[key], bool)):
            raise ValueError(f"model {name!r}: {key}={value!r} does not fit its type {type(known[key]).__name__}")
    return converted


def make_model(name: str, num_users: int, num_items: int, dim: int, generator: torch.Generator,
               **options: float) -> RankingModel:
    """A fresh model ``name`` (one of ``MODELS``) for ``num_users`` × ``num_items``; ``options``
    override its hyper-parameters (``hyper_parameters(name)``)."""
    settings = check_hyper_parameters(name, options)
    model = MODELS[name](num_users, num_items, dim, generator)
    for key, value in settings.items():
        setattr(model, key, value)
    return model
