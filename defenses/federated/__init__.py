"""Server-side defenses of federated training: aggregation rules over the per-client uploads, one module
each, registered by name in ``federation.plugins.AGGREGATION_RULES`` (``--aggregation NAME``)."""
