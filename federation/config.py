"""One validated, serialisable configuration for a simulation run (federated or central)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from federation.assignments import StrategyAssignment
from federation.plugins import AGGREGATION_RULES, PROFILE_ATTACK_PRESETS, is_spec, strategy_registry
from recsys.models.ncf import NCFSpec

MODES = ("federated", "central")
BACKENDS = ("inprocess", "ray")
DEVICES = ("auto", "cpu", "cuda")


def usable_cores() -> int:
    """CPU cores this process may run on (the affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class ConfigError(ValueError):
    """A setting is missing, malformed or out of range; the message says which and how to fix it."""


@dataclass(frozen=True)
class SimulationConfig:
    """Every setting of a run. Defaults are the federated poisoning paper's (section 5.1)."""

    dataset: str = "synthetic"
    data_dir: str = ""
    synthetic_users: int = 1000
    synthetic_items: int = 500
    synthetic_items_per_user: int = 30
    split_seed: int = -1  # -1: the dataset's own train/test split; else every user's items split again at random
    mode: str = "federated"
    epochs: int = 30
    seed: int = 0
    dim: int = 8
    layers: tuple[int, ...] = (8, 8)
    negatives: int = 4  # r: sampled negatives per positive
    lr: float = 0.001  # η, for Θ (server) and p_u (clients)
    clients_per_round: int = 256
    # ---- server aggregation (defenses/federated; --aggregation NAME and its options) ----
    aggregation: str = "sum"  # a rule of federation.plugins.AGGREGATION_RULES or a plug-in SPEC
    aggregation_scope: str = "row"  # row: each item row over its uploaders, each MLP tensor whole; vector: whole uploads
    assumed_malicious: str = "fraction:0.05"  # f per group: fraction:β (⌊β·n⌋), oracle (true count), bound:F
    trim_fraction: float = 0.1  # β of trimmed-mean: the share trimmed from each tail
    clip_row: float = 0.0  # τ for item rows (norm-bound, centered-clip; dp-clip: whole uploads); 0: per-round quantile
    clip_mlp: float = 0.0  # τ for MLP neurons / biases; 0: per-round quantile
    clip_quantile: float = 0.9  # the quantile of a round's uploaded norms that sets τ when no absolute τ is given
    clip_iterations: int = 5  # centered-clip iterations
    dp_noise_multiplier: float = 0.1  # dp-clip: Gaussian noise std = multiplier · τ on each summed group
    gate_threshold: float = 4.0  # row-gate: z-score of an item row's uploader count above its running mean
    top_k: int = 20
    er_ks: tuple[int, ...] = (5, 10, 20, 30)
    targets: tuple[int, ...] = ()  # explicit target item ids; empty: the T least popular items
    num_targets: int = 1  # T
    client_strategies: tuple[str, ...] = ()  # SPEC or SPEC@IDS, see clients.strategy
    # ---- malicious clients (attacks/federated; the federated poisoning paper's section 3 and 5.1) ----
    attack: str = "none"  # strategy of the injected malicious clients: a-ra, a-hum, eb, ra or a plug-in SPEC
    malicious_frac: float = 0.0  # ρ: ⌊N_benign · ρ⌋ malicious clients are injected before training
    attack_scale: float = 1.0  # α: multiplies every malicious upload
    approx_users: int = 10  # n: approximated user vectors per target (A-ra, A-hum)
    approx_sigma: float = 0.01  # σ: p̂ ~ N(0, σ²)
    mining_lr: float = 0.001  # ξ: hard-user-mining step (A-hum, eq. 9)
    mining_steps: int = 30  # β: hard-user-mining iterations
    fake_profile_items: int = 30  # RA: items of a fake user's profile, targets included
    profile_preset: str = "lean"  # the gradient profile attacks' preset (attacks.implicit.PRESETS)
    num_shards: int = 0  # supernodes hosting the clients; 0: one in process, one per available CPU core with Ray
    backend: str = "inprocess"
    client_num_cpus: float = 1.0
    client_num_gpus: float = 0.0
    device: str = "auto"
    out: str = "runs/latest"
    checkpoint_every: int = 1  # epochs between checkpoints (0: never)
    resume: bool = False
    overwrite: bool = False  # replace the run already in ``out`` (else a new run there is refused)
    max_rejected: float = 1.0  # a round with more than this share of rejected uploads (or all of them) stops the run
    extra: dict[str, str] = field(default_factory=dict)  # free-form options for plug-in strategies

    def __post_init__(self) -> None:
        self._validate()

    # ---- validation -------------------------------------------------------------------
    def _validate(self) -> None:
        from recsys.data import DATASET_NAMES

        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ConfigError(message)

        need(self.dataset in DATASET_NAMES, f"dataset {self.dataset!r} is unknown; choose one of {', '.join(DATASET_NAMES)}")
        need(self.mode in MODES, f"mode must be one of {MODES}, got {self.mode!r}")
        need(self.backend in BACKENDS, f"backend must be one of {BACKENDS}, got {self.backend!r}")
        need(self.device in DEVICES, f"device must be one of {DEVICES}, got {self.device!r}")
        for name in ("synthetic_users", "synthetic_items", "synthetic_items_per_user", "dim", "negatives",
                     "clients_per_round", "top_k", "num_targets"):
            need(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("approx_users", "mining_steps", "fake_profile_items"):
            need(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        need(0 <= self.max_rejected <= 1, f"max_rejected must be a share in [0, 1], got {self.max_rejected}")
        need(0 <= self.malicious_frac < 1, f"malicious_frac (ρ) must be in [0, 1), got {self.malicious_frac}")
        need(self.attack != "none" or self.malicious_frac == 0,
             f"malicious_frac={self.malicious_frac} needs an attack: pass --attack (one of a-ra, a-hum, eb, ra or a plug-in)")
        need(self.attack_scale > 0 and self.approx_sigma > 0 and self.mining_lr > 0,
             "attack_scale (α), approx_sigma (σ) and mining_lr (ξ) must be > 0")
        need(self.split_seed >= -1, f"split_seed must be -1 (the dataset's own split) or a seed >= 0, got {self.split_seed}")
        for name in ("epochs", "num_shards", "checkpoint_every", "seed"):
            need(getattr(self, name) >= 0, f"{name} must be >= 0, got {getattr(self, name)}")
        need(5 <= self.synthetic_items_per_user <= self.synthetic_items,
             f"synthetic_items_per_user must be in [5, synthetic_items={self.synthetic_items}], got {self.synthetic_items_per_user}")
        need(self.lr > 0, f"lr must be > 0, got {self.lr}")
        need(bool(self.layers) and all(h >= 1 for h in self.layers), f"layers must be positive widths, got {self.layers}")
        need(bool(self.er_ks) and all(k >= 1 for k in self.er_ks), f"er_ks must be positive, got {self.er_ks}")
        need(all(t >= 0 for t in self.targets), f"targets must be item ids >= 0, got {self.targets}")
        need(self.client_num_cpus > 0 and self.client_num_gpus >= 0, "client_num_cpus must be > 0 and client_num_gpus >= 0")
        need(self.aggregation in AGGREGATION_RULES or is_spec(self.aggregation),
             f"aggregation {self.aggregation!r} is unknown; choose one of {', '.join(AGGREGATION_RULES)} "
             "or a plug-in 'package.module:Class' / 'path/to/file.py:Class'")
        need(self.profile_preset in PROFILE_ATTACK_PRESETS,
             f"profile_preset must be one of {', '.join(PROFILE_ATTACK_PRESETS)}, got {self.profile_preset!r}")
        need(self.aggregation_scope in ("row", "vector"), f"aggregation_scope must be row or vector, got {self.aggregation_scope!r}")
        need(_f_policy_ok(self.assumed_malicious),
             f"assumed_malicious must be fraction:β (0 <= β < 0.5), oracle or bound:F (F >= 0), got {self.assumed_malicious!r}")
        need(0 <= self.trim_fraction < 0.5, f"trim_fraction (β) must be in [0, 0.5), got {self.trim_fraction}")
        need(self.clip_row >= 0 and self.clip_mlp >= 0, "clip_row and clip_mlp (τ) must be >= 0 (0: a per-round quantile)")
        need(0 < self.clip_quantile <= 1, f"clip_quantile must be in (0, 1], got {self.clip_quantile}")
        need(self.clip_iterations >= 1 and self.dp_noise_multiplier >= 0 and self.gate_threshold > 0,
             "clip_iterations must be >= 1, dp_noise_multiplier >= 0 and gate_threshold > 0")
        try:
            specs = [StrategyAssignment.parse(text).spec for text in self.client_strategies]
        except ValueError as error:
            raise ConfigError(str(error)) from None
        registry = strategy_registry()
        for spec in specs + ([self.attack] if self.attack != "none" else []):
            need(spec in registry or is_spec(spec),
                 f"unknown client strategy {spec!r}: use one of {', '.join(sorted(registry))}, "
                 "'package.module:Class' or 'path/to/file.py:Class'")

    # ---- derived values ---------------------------------------------------------------
    def model_spec(self, num_items: int) -> NCFSpec:
        return NCFSpec(num_items=num_items, dim=self.dim, layers=self.layers)

    def strategy_assignments(self) -> tuple[StrategyAssignment, ...]:
        return tuple(StrategyAssignment.parse(t) for t in self.client_strategies)

    def resolved_shards(self) -> int:
        """Shards actually used: 1 in central mode, else ``num_shards``, or by default one per CPU core with Ray
        (worker processes) and one in process (shards there are threads sharing Python's lock, while one shard's
        batched math uses every core: ML-1M epoch 0.43 s with one shard against 0.55 s with two on 2 cores)."""
        if self.mode == "central":
            return 1
        return self.num_shards or (1 if self.backend == "inprocess" else usable_cores())

    def resolved_device(self) -> str:
        import torch

        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("device 'cuda' was asked for but torch sees no CUDA GPU; use --device cpu")
        return self.device

    def changed_settings(self, other: SimulationConfig) -> list[str]:
        """Settings that differ from ``other``, ignoring those a resumed run may change."""
        free = {"epochs", "resume", "out", "backend", "num_shards", "client_num_cpus", "client_num_gpus",
                "device", "checkpoint_every", "overwrite", "max_rejected"}
        mine, theirs = self.to_dict(), other.to_dict()
        return sorted(k for k in mine if k not in free and mine[k] != theirs[k])

    # ---- (de)serialisation --------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def flat(self) -> dict[str, bool | int | float | str]:
        """Scalar-only view (Flower run_config values must be scalars): tuples joined by commas."""
        out: dict[str, bool | int | float | str] = {}
        for key, value in self.to_dict().items():
            if isinstance(value, (tuple, list)):
                value = ";".join(map(str, value)) if key == "client_strategies" else ",".join(map(str, value))
            elif isinstance(value, dict):
                value = json.dumps(value, sort_keys=True)
            out[key.replace("_", "-")] = value
        return out

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> SimulationConfig:
        """Build from a dict (JSON or Flower run_config: dashes or underscores, scalars or lists)."""
        known = {f.name: f for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for raw_key, value in values.items():
            key = raw_key.replace("-", "_")
            if key not in known:
                raise ConfigError(f"unknown setting {raw_key!r}; known settings: {', '.join(sorted(known))}")
            kwargs[key] = _coerce(key, value, cls.__dataclass_fields__[key].type)
        return cls(**kwargs)

    @classmethod
    def from_json(cls, text: str) -> SimulationConfig:
        return cls.from_mapping(json.loads(text))


def _f_policy_ok(text: str) -> bool:
    kind, _, value = text.partition(":")
    try:
        return (kind == "oracle" and not value) or (kind == "fraction" and 0 <= float(value) < 0.5) or (
            kind == "bound" and int(value) >= 0)
    except ValueError:
        return False


def _coerce(key: str, value: Any, annotation: str) -> Any:
    """Turn JSON / run_config scalars into the field's type, with a clear error."""
    try:
        if annotation.startswith("tuple[int"):
            parts = value.split(",") if isinstance(value, str) else value
            return tuple(int(p) for p in parts if str(p).strip() != "")
        if annotation.startswith("tuple[str"):
            parts = value.split(";") if isinstance(value, str) else value
            return tuple(str(p) for p in parts if str(p).strip() != "")
        if annotation.startswith("dict"):
            return dict(json.loads(value) if isinstance(value, str) else value)
        if annotation == "bool":
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(value)
                return value.lower() in ("true", "1")
            return bool(value)
        if annotation == "int":
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if annotation == "float":
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"setting {key!r} expects {annotation}, got {value!r}") from None
