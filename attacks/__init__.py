"""Malicious client strategies (A-ra, A-hum, EB, RA) and central-mode data-poisoning attacks.

A federated attack is one module here plus an entry in ``federation.plugins.MALICIOUS_STRATEGIES``; it plugs into
the harness through the same ``ClientStrategy`` interface that users' own strategies use.
"""
