"""Offline evaluation: protocols, metrics at k, bootstrap intervals.

- ``protocols``: temporal cut-off (default), leave-last-n-out and random per-customer
  ratio splits; each gives training events, held-out relevant items, and a validation
  split carved from the training side.
- ``metrics``: precision, recall, hit rate, MAP, NDCG, MRR at k (vectorised over
  customers), catalogue coverage, novelty, intra-list diversity, RMSE/MAE, and
  ``evaluate_run`` for per-customer arrays and means of one run.
- ``intervals``: seeded percentile bootstrap for one mean and for paired differences.

Import from the modules, like ``training.models``.
"""
