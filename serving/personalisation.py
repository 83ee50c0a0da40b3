"""The tactics and experiments a service applies, loaded and checked together.

One object, swapped whole (like a bundle): a request sees one version of both files.
Experiments are checked against the tactics (a variant's rule set must exist) and the
bundle (a variant's model must be in it); any problem refuses the new files and the old
ones keep serving.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segrec.experiments import (
    BLEND,
    ExperimentConfigError,
    ExperimentsConfig,
    load_experiments,
)
from serving.tactics import Catalogue, Tactics, TacticsError, load_tactics, no_tactics


class PersonalisationError(ValueError):
    """Tactics or experiments that cannot serve with this bundle."""


@dataclass(frozen=True)
class Assignment:
    experiment: str
    variant: str
    model: str  # "blend" or one model
    rule_set: str | None

    def as_json(self) -> dict[str, str]:
        return {"name": self.experiment, "variant": self.variant}


@dataclass(frozen=True)
class Personalisation:
    tactics: Tactics = field(default_factory=no_tactics)
    experiments: ExperimentsConfig = field(
        default_factory=lambda: ExperimentsConfig(version="none")
    )
    stamps: tuple[float | None, float | None] = (None, None)  # files' mtimes when read

    def assign(
        self,
        customer_id: str,
        placement: str,
        segment: dict[str, Any] | None,
        now: dt.datetime,
    ) -> Assignment | None:
        """The experiment variant this request belongs to, if any (at most one: running
        experiments cannot overlap, see :mod:`segrec.experiments`)."""
        segment_id = None if segment is None else int(segment["id"])
        segment_name = None if segment is None else str(segment["name"])
        for experiment in self.experiments.experiments:
            if not experiment.running(now):
                continue
            if not experiment.targets(placement, segment_id, segment_name):
                continue
            variant = experiment.assign(customer_id)
            if variant is None:
                return None
            chosen = self.experiments.variant_of(experiment.name, variant)
            return Assignment(experiment.name, variant, chosen.model, chosen.rule_set)
        return None

    def summary(self) -> dict[str, Any]:
        return {
            "tactics": self.tactics.summary(),
            "experiments": {
                "version": self.experiments.version,
                "running": [e.name for e in self.experiments.experiments],
            },
        }


def file_stamp(path: Path) -> float | None:
    try:
        return os.stat(path).st_mtime_ns / 1e9
    except FileNotFoundError:
        return None


def load_personalisation(
    tactics_file: Path, experiments_file: Path, catalogue: Catalogue
) -> Personalisation:
    """Both files, validated against each other and the bundle's ``catalogue``."""
    stamps = (file_stamp(tactics_file), file_stamp(experiments_file))
    try:
        tactics = load_tactics(tactics_file, catalogue)
        experiments = load_experiments(experiments_file)
    except (TacticsError, ExperimentConfigError) as error:
        raise PersonalisationError(str(error)) from None
    for experiment in experiments.experiments:
        for variant in experiment.variants:
            where = f"{experiments_file}: experiments.{experiment.name}.{variant.name}"
            if variant.model != BLEND and variant.model not in catalogue.model_names:
                raise PersonalisationError(
                    f"{where}: model {variant.model!r} is not 'blend' nor a model of the "
                    f"bundle {list(catalogue.model_names)}"
                )
            if variant.rule_set is not None and variant.rule_set not in tactics.rule_sets:
                raise PersonalisationError(
                    f"{where}: rule_set {variant.rule_set!r} is not in {tactics_file} "
                    f"(it has {sorted(tactics.rule_sets)})"
                )
    return Personalisation(tactics, experiments, stamps)
