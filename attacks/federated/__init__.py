"""Malicious federated clients of Rong et al., IJCAI 2022 (A-ra, A-hum) and their baselines (EB, RA).

Each is a ``ClientStrategy`` (one module each), registered by name in
``federation.plugins.MALICIOUS_STRATEGIES``; ``simulate.py --attack NAME --malicious-frac ρ`` injects
⌊N·ρ⌋ clients driven by it.
"""
