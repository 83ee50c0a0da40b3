"""Customer segmentation: preprocess, cluster, choose k, profile and name, version, export."""
