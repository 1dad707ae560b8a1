"""Convert a trusted, whole pickled training checkpoint into a plain state dict the app can load safely.

Original Scaled-YOLOv4 checkpoints are `{'model': <models.yolo.Model>}` and need the original
`models.*` and `mish_cuda` code to unpickle; torchxrayvision saves whole `DenseNet` objects. Classes
that cannot be imported here are replaced by empty `nn.Module` stand-ins, which is enough to recover
their parameters and buffers by name. Only run this on files you trust: unpickling can run code.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch
from torch import nn

from inference.models.weights import WeightsError


class _StandIn(nn.Module):
    """Takes the place of a class whose code is not installed (models.common.Conv, MishCuda, …)."""

    def forward(self, *args, **kwargs):  # pragma: no cover - never run, only read
        raise RuntimeError("stand-in modules only carry weights")


class _StandInUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            return type(name, (_StandIn,), {"__module__": module, "__qualname__": name})


class _StandInPickle:
    """The `pickle_module` torch.load uses: standard pickle with the stand-in class lookup."""

    Unpickler = _StandInUnpickler
    load = staticmethod(pickle.load)
    __name__ = "mededge_standin_pickle"


def convert_pickled_checkpoint(source: str | os.PathLike[str], target: str | os.PathLike[str], *,
                               trust_pickle: bool) -> dict:
    """Write `target` as `{'state_dict': …}` (+ 'pathologies' when the model names its outputs)."""
    if not trust_pickle:
        raise WeightsError("converting unpickles the file, which can run code: pass --trust-pickle "
                           "only for a checkpoint from a source you trust")
    source, target = Path(source), Path(target)
    try:
        checkpoint = torch.load(source, map_location="cpu", weights_only=False, pickle_module=_StandInPickle)
    except FileNotFoundError as exc:
        raise WeightsError(f"no such file: {source}") from exc
    except Exception as exc:
        raise WeightsError(f"{source.name} could not be unpickled: {' '.join(str(exc).split())[:160]}") from exc

    model = checkpoint
    if isinstance(checkpoint, dict):
        for key in ("ema", "model", "state_dict", "model_state_dict"):
            if checkpoint.get(key) is not None:
                model = checkpoint[key]
                break
    if isinstance(model, nn.Module):
        state = model.state_dict()
        names = getattr(model, "pathologies", None)
    elif isinstance(model, dict) and all(isinstance(v, torch.Tensor) for v in model.values()):
        state, names = model, None
    else:
        raise WeightsError(f"{source.name} holds neither a model nor a state dict")
    state = {k: (v.float() if v.is_floating_point() else v).clone() for k, v in state.items()}
    out: dict[str, dict[str, torch.Tensor] | list[str]] = {"state_dict": state}
    if names:
        out["pathologies"] = [str(n) for n in names]
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(out, target)
    return {"tensors": len(state), "parameters": int(sum(v.numel() for v in state.values())),
            "pathologies": out.get("pathologies")}
