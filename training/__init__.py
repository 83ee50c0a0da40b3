"""Training side of segrec: data, features, segmentation, models. Never imported by serving."""
