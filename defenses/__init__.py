"""Defenses: robust aggregation rules (registered in ``server.aggregation.AGGREGATIONS``) and
central-mode training defenses (TCD, AT, RAT)."""
