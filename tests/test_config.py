"""Settings are validated with messages that say what is wrong, and survive Flower's run_config."""

import pytest

from federation.config import ConfigError, SimulationConfig


def test_flat_run_config_round_trips():
    config = SimulationConfig(layers=(16, 8), er_ks=(5, 10), targets=(3, 4),
                              client_strategies=("honest", "honest@0-4,9"), extra={"alpha": "2"})
    flat = config.flat()
    assert all(isinstance(v, (bool, int, float, str)) for v in flat.values())
    assert flat["layers"] == "16,8" and flat["client-strategies"] == "honest;honest@0-4,9"
    assert SimulationConfig.from_mapping(flat) == config
    assert SimulationConfig.from_json(config.to_json()) == config


@pytest.mark.parametrize("settings,message", [
    ({"dataset": "movielens"}, "dataset 'movielens' is unknown"),
    ({"lr": 0}, "lr must be > 0"),
    ({"epochs": -1}, "epochs must be >= 0"),
    ({"layers": ()}, "layers must be positive"),
    ({"aggregation": "mean"}, "aggregation .mean. is unknown"),
    ({"assumed_malicious": "fraction:0.7"}, "assumed_malicious must be"),
    ({"aggregation_scope": "items"}, "aggregation_scope must be row or vector"),
    ({"backend": "dask"}, "backend must be one of"),
    ({"client_strategies": ("honest@1-x",)}, "bad client id list"),
    ({"client_strategies": ("nosuchstrategy",)}, "unknown client strategy 'nosuchstrategy'"),
    ({"synthetic_items_per_user": 900}, "synthetic_items_per_user must be in"),
])
def test_invalid_settings_name_the_problem(settings, message):
    with pytest.raises(ConfigError, match=message):
        SimulationConfig(**settings)


def test_run_config_errors_name_the_setting():
    with pytest.raises(ConfigError, match="unknown setting 'epoch'"):
        SimulationConfig.from_mapping({"epoch": 3})
    with pytest.raises(ConfigError, match="setting 'epochs' expects int, got 'three'"):
        SimulationConfig.from_mapping({"epochs": "three"})
    with pytest.raises(ConfigError, match="setting 'layers' expects"):
        SimulationConfig.from_mapping({"layers": "8,x"})


def test_central_mode_uses_one_shard():
    assert SimulationConfig(mode="central", num_shards=8).resolved_shards() == 1
    assert SimulationConfig(num_shards=3).resolved_shards() == 3
