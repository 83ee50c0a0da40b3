"""Kubernetes manifests (kustomize) and their validation: see k8s/README.md."""
