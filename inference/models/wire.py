"""Wire formats: how the tensors crossing a cut are encoded for the trip to the edge.

fp32 as is; fp16 halves the bytes; int8 quarters them: per sample and channel, an affine uint8 code
q = round(x / scale) + zero (scale, zero sent beside it as FP32 per channel), decoded on the edge
inside the part's ONNX graph as (q − zero) · scale.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch

from inference.config import WireFormat

ENCODINGS = tuple(dict.fromkeys(w.encoding for w in WireFormat))  # the wire formats with an edge part each


DTYPES = {"FP32": np.float32, "FP16": np.float16, "UINT8": np.uint8}
SCALE_SUFFIX, ZERO_SUFFIX = "_scale", "_zero"


def quantize(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[B, C, …] float → (uint8 codes, scale [B, C], zero [B, C]) covering each channel's min..max."""
    x = np.asarray(x, dtype=np.float32)
    flat = x.reshape(x.shape[0], x.shape[1], -1)
    low = np.minimum(flat.min(axis=2), 0.0)   # 0 stays exactly representable (ReLU/Mish outputs)
    high = np.maximum(flat.max(axis=2), 0.0)
    scale = np.maximum((high - low) / 255.0, 1e-12).astype(np.float32)
    zero = np.round(-low / scale).astype(np.float32)
    shape = scale.shape + (1,) * (x.ndim - 2)
    codes = np.clip(np.round(x / scale.reshape(shape)) + zero.reshape(shape), 0, 255).astype(np.uint8)
    return codes, scale, zero


def dequantize_torch(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    """The edge side of int8, as traced into the ONNX graph."""
    shape = tuple(scale.shape) + (1,) * (codes.dim() - 2)
    return (codes.float() - zero.reshape(shape)) * scale.reshape(shape)


def encode(wire: WireFormat, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Crossing tensors (by name) → the arrays sent to the edge part (by input name). Compression, where the
    wire format has it, is gRPC's, on the whole request: see `deflated_size`."""
    wire = wire.encoding
    if wire is WireFormat.FP32:
        return {name: np.ascontiguousarray(t, dtype=np.float32) for name, t in tensors.items()}
    if wire is WireFormat.FP16:
        return {name: np.ascontiguousarray(t, dtype=np.float16) for name, t in tensors.items()}
    out = {}
    for name, tensor in tensors.items():
        codes, scale, zero = quantize(tensor)
        out[name], out[name + SCALE_SUFFIX], out[name + ZERO_SUFFIX] = codes, scale, zero
    return out


def round_trip(wire: WireFormat, tensor: torch.Tensor) -> torch.Tensor:
    """What the edge computes with after the tensor crossed the wire (for the fidelity gate)."""
    wire = wire.encoding  # compression is lossless
    if wire is WireFormat.FP32:
        return tensor
    if wire is WireFormat.FP16:
        return tensor.half().float()
    codes, scale, zero = quantize(tensor.cpu().numpy())
    return dequantize_torch(torch.from_numpy(codes), torch.from_numpy(scale), torch.from_numpy(zero)).to(tensor.device)



def deflated(arrays: dict[str, np.ndarray]) -> bytes:
    """The encoded arrays deflated as gRPC's message compression does it (its core uses zlib's default
    level): what int8+deflate puts on the link, to measure rather than assume."""
    return zlib.compress(b"".join(np.ascontiguousarray(a).tobytes() for a in arrays.values()), zlib.Z_DEFAULT_COMPRESSION)
