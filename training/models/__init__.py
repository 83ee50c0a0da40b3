"""Recommenders behind one interface, and the interaction data they train on.

- ``interactions``: id vocabularies, event weights, the customer x product confidence
  matrix, temporal splits and held-out items.
- ``base``: ``Recommender``, the scikit-learn-style contract every model follows.
- Models: ``popularity.Popularity`` (global, per segment, trending),
  ``buy_again.BuyAgain``, ``svd.SVD`` (Surprise), ``als.ALS`` (implicit),
  ``content.Content`` (scikit-learn), ``category_popularity.CategoryPopularity``.
- ``blend_fit``: blend weights per segment.

Scoring from exported arrays (and ALS fold-in), blending and the business filters are
numpy-only and live in ``segrec.scoring``, ``segrec.blend`` and ``segrec.filters``, which
serving imports too.
"""
