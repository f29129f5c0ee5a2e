"""The Ray backend (Flower's simulation engine) gives the same numbers as the in-process one."""

import pytest

from federation.config import SimulationConfig
from harness.runner import run


def test_ray_engine_matches_inprocess(tmp_path):
    settings = dict(dataset="synthetic", synthetic_users=300, synthetic_items=120, synthetic_items_per_user=20,
                    epochs=2, clients_per_round=64, lr=0.05, num_shards=2, seed=7, attack="a-hum", malicious_frac=0.02)
    inprocess = run(SimulationConfig(**settings, out=str(tmp_path / "a")), echo=False)
    ray = run(SimulationConfig(**settings, out=str(tmp_path / "b"), backend="ray"), echo=False)
    assert len(ray) == len(inprocess) == 3
    for a, b in zip(inprocess[1:], ray[1:]):
        for key in ("test/hr@20", "test/ndcg@20", "target/er@10", "train/loss", "uploads/malicious_norm_mean"):
            assert b[key] == pytest.approx(a[key], rel=1e-5), key
