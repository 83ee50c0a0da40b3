"""Churn risk and customer lifetime value: point-in-time panels, the two models, the step
``make train`` runs to write them to Feast, and their report."""
