"""Simulated federated clients: a Flower ``ClientApp`` whose supernodes each host a shard of
users, the batched local training, and the pluggable client-strategy interface."""
