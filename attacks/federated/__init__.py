"""Malicious federated clients of Rong et al., IJCAI 2022 (A-ra, A-hum) and their baselines (EB, RA).

Each is a ``ClientStrategy`` (one module each) registered here under the name ``--attack`` takes;
``simulate.py --attack NAME --malicious-frac ρ`` injects ⌊N·ρ⌋ clients driven by it.
"""

from attacks.federated.a_hum import HardUserMining
from attacks.federated.a_ra import RandomApproximation
from attacks.federated.explicit_boosting import ExplicitBoosting
from attacks.federated.random_attack import RandomAttack
from clients.strategy import ClientStrategy

MALICIOUS_STRATEGIES: dict[str, type[ClientStrategy]] = {
    "a-ra": RandomApproximation,
    "a-hum": HardUserMining,
    "eb": ExplicitBoosting,
    "ra": RandomAttack,
}
