"""The shipped model settings (inference/resources/models/models.yaml): the one place defaults live."""

from pathlib import Path

import yaml

RESOURCES = Path(__file__).resolve().parent.parent / "resources" / "models"  # package data: in the wheel too
MODEL_SETTINGS: dict = yaml.safe_load((RESOURCES / "models.yaml").read_text())
