"""Central mode: a centralized recommender simulated as a federation of one client that holds
every user (``simulate.py --mode central``), so centralized and federated experiments share the
same data, model, server, metrics and outputs."""
