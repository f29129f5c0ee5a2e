"""Recommender models shared by the federated and the central mode."""

from recsys.models.ncf import NCFSpec, Theta, init_theta, init_user_embeddings, ncf_logits, score_all_items

__all__ = ["NCFSpec", "Theta", "init_theta", "init_user_embeddings", "ncf_logits", "score_all_items"]
