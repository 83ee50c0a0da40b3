"""Recommenders behind one interface, and the interaction data they train on.

- ``interactions``: id vocabularies, event weights, the customer x product confidence
  matrix, temporal splits and held-out items.
- ``base``: ``Recommender``, the scikit-learn-style contract every model follows.
- Models: ``popularity.Popularity`` (global, per segment, trending),
  ``buy_again.BuyAgain``, ``svd.SVD`` (Surprise), ``als.ALS`` (implicit),
  ``content.Content`` (scikit-learn).
- ``scoring``: numpy-only scoring and ALS fold-in from exported arrays, for serving too.

Import from the modules: this package imports nothing, so ``training.models.scoring``
loads with numpy alone.
"""
