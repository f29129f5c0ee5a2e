"""Imports point down the layers only, function-level (lazy) imports included:
recsys → federation → server, clients → harness → attacks, defenses, central → experiments."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYER = {"recsys": 0, "federation": 1, "server": 2, "clients": 2, "harness": 3,
         "attacks": 4, "defenses": 4, "central": 4, "experiments": 5}
PEERS_ALLOWED = {4}  # attacks, defenses and central build on one another (e.g. defenses train central learners)


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names & set(LAYER)


@pytest.mark.parametrize("package", sorted(LAYER))
def test_imports_point_down(package):
    layer = LAYER[package]
    wrong = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for other in imported_packages(path) - {package}:
            if LAYER[other] > layer or (LAYER[other] == layer and layer not in PEERS_ALLOWED):
                wrong.append(f"{path.relative_to(ROOT)} imports {other}")
    assert not wrong, "\n".join(wrong)
