"""The training container image: what the Kubernetes Jobs and CronJobs run.

``make image-training`` (``python -m training.container build``) builds
``localhost/segrec-training:<version>`` with buildah from ``Containerfile`` here, on the same
local ``python:3.11-slim`` base as the serving image (built once by ``serving.container``);
``make image-training-smoke`` (``python -m training.container smoke``) runs the jobs' own
commands in it, as the dev overlay renders them. No Docker engine is needed.

Nothing here is imported by the jobs themselves.
"""

from __future__ import annotations

# The name the Kubernetes overlays deploy for every job (kustomize ``images:``), tagged
# with the version in pyproject.toml.
TRAINING_IMAGE = "localhost/segrec-training"
# Inside the image: the project (editable, so settings.PROJECT_ROOT is here), its venv, and
# the uid every job pod runs as (the manifests' runAsUser and fsGroup).
APP_DIR = "/app"
VENV_DIR = "/opt/venv"
REQUIREMENTS_IN_IMAGE = "/opt/segrec/requirements-training.txt"
RUN_AS_UID = 1034
