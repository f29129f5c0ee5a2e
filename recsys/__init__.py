"""Shared recommender building blocks used by both the federated and the central mode:
datasets (``recsys.data``), models (``recsys.models``) and ranking metrics
(``recsys.metrics``)."""
