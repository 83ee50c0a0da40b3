"""A/B experiment analysis: attribution of outcomes to exposures, the statistics, the
report (``make ab-report``) and an offline simulator that drives the live service."""
