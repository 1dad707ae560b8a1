"""The shipped model settings (inference/resources/models/models.yaml): the one place defaults live."""

from pathlib import Path

import yaml

RESOURCES = Path(__file__).resolve().parent.parent / "resources" / "models"  # package data: in the wheel too
MODEL_SETTINGS: dict = yaml.safe_load((RESOURCES / "models.yaml").read_text())

# Local runtimes for a whole model (inference.runtimes.local); named here so the command line and the app's
# settings can check a choice without importing torch.
LOCAL_RUNTIMES = ("auto", "torch", "torch-fp16", "onnxruntime", "onnxruntime-int8-dynamic",
                  "onnxruntime-int8-static")

# Wire formats (inference.models.parts.WireFormat's values), named here for the same reason.
WIRE_FORMATS = ("fp32", "fp16", "int8", "int8+deflate")
