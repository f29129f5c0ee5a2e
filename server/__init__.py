"""The federated server: a Flower ``ServerApp`` that holds Θ (item embeddings + MLP), samples
clients each round, validates their uploads and aggregates them (eq. 6)."""
