"""The serving container image: built from the Bento with buildah and started for real.

``make image`` (``python -m serving.container build``) and ``make image-smoke``
(``python -m serving.container smoke``). No Docker engine is needed: buildah builds and
runs the image with ``--isolation chroot``, and the ``python:3.11-slim`` base that
BentoML's Dockerfile starts from is built locally from ``debootstrap`` (no registry is
reachable here). On a workstation with Docker, ``bentoml containerize`` with its default
backend builds the same image (README, "Container image").

Nothing here is imported by the service.
"""

from __future__ import annotations

# The name the Kubernetes overlays deploy (kustomize ``images:``), tagged with the version
# in pyproject.toml.
SERVING_IMAGE = "localhost/segrec-serving"
# What BentoML's generated Dockerfile says (``FROM python:3.11-slim``), resolved locally.
BASE_IMAGE = "localhost/python:3.11-slim"
# The debootstrap'd Debian root filesystem the base image is built on (removed afterwards).
ROOTFS_IMAGE = "localhost/debian:bookworm-minbase"
DEBIAN_SUITE = "bookworm"
