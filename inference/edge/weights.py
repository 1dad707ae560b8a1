"""One copy of a model's weights for all of its edge parts.

Every part of a model (stages [cut, n) at one wire format) holds a subset of the tensors of the whole model's
part (cut 0): exported alone, each would repeat them (the detector's 32 cuts × 2 wire formats were 8.9 GB
against 281 MB of weights). So the whole model's tensors are written once, `weights.bin`, and each part's
`model.onnx` refers to the ranges it uses (ONNX external data, which stock Triton's onnxruntime backend reads
beside the model file). Each part's version folder holds `weights.bin` as a hard link to the one file: no
path leaves the part's folder, and a copy of the repository that breaks the links still serves (only larger).

Tensors are matched by the SHA-256 of their bytes, so a tensor the exporter made differently for a part
(none seen) simply stays inside that part's ONNX. The part's config records the SHA-256 of the ranges it
uses, in its order (`mededge_weights_sha256`): the serving side checks what it loads, not the whole file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

WEIGHTS_FILE = "weights.bin"
INDEX_FILE = "weights.json"     # tensor digest → range, for the next export into the same repository
WEIGHTS_DIGEST = "mededge_weights_sha256"
INLINE_BYTES = 1024             # smaller tensors stay in the ONNX (onnx's own external-data threshold)
ALIGN = 4096                    # ranges start on a page: onnxruntime may map them instead of copying
_TEMPORARY = re.compile(r"\..+\.(link|[a-z0-9_]{8})")  # see remove_leftovers


@dataclass(frozen=True)
class SharedWeights:
    """A model's `weights.bin` and where each of its tensors lies in it."""

    path: Path
    model: str                                # the model's fingerprint (architecture and weights)
    ranges: dict[str, tuple[int, int]]        # SHA-256 of a tensor's bytes → (offset, length)


def _tensor_bytes(tensor) -> bytes:
    from onnx import numpy_helper

    return tensor.raw_data if tensor.HasField("raw_data") else numpy_helper.to_array(tensor).tobytes()


def remove_leftovers(root: Path) -> list[Path]:
    """The temporary files an interrupted export left in the parts' folders (files are written beside their
    place and renamed: ".NAME.XXXXXXXX" by `_replace_atomically`, ".NAME.link" by `link`): removed, since the
    stock-container script serves nothing that SHA256SUMS does not list."""
    left = [path for path in root.glob("*/*/.*") if path.is_file() and _TEMPORARY.fullmatch(path.name)]
    for path in left:
        path.unlink()
    return left


def _replace_atomically(path: Path, write) -> None:
    """Write through a temporary file then rename: an existing hard link elsewhere keeps its old content."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as out:
            write(out)
        os.chmod(temporary, 0o644)  # as the exporter's other files: readable by the server, writable by no one else
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_shared(folder: Path, model: str, whole_part: Path) -> SharedWeights:
    """`weights.bin` and its index in `folder`, from the tensors of the whole model's part `whole_part`."""
    import onnx

    proto = onnx.load(str(whole_part), load_external_data=False)  # exported just now: all inside
    ranges: dict[str, tuple[int, int]] = {}
    chunks: list[tuple[int, bytes]] = []
    end = 0
    for tensor in proto.graph.initializer:
        data = _tensor_bytes(tensor)
        digest = hashlib.sha256(data).hexdigest()
        if len(data) < INLINE_BYTES or digest in ranges:
            continue
        offset = -(-end // ALIGN) * ALIGN
        ranges[digest] = (offset, len(data))
        chunks.append((offset, data))
        end = offset + len(data)

    def blob(out) -> None:
        for offset, data in chunks:
            out.seek(offset)
            out.write(data)
    folder.mkdir(parents=True, exist_ok=True)
    _replace_atomically(folder / WEIGHTS_FILE, blob)
    index = {"model": model, "tensors": [[d, o, n] for d, (o, n) in ranges.items()]}
    _replace_atomically(folder / INDEX_FILE, lambda out: out.write(json.dumps(index).encode()))
    return SharedWeights(folder / WEIGHTS_FILE, model, ranges)


def find_shared(root: Path, model: str) -> SharedWeights | None:
    """The weights of `model` already in repository `root`, checked range by range; None if there are none
    (or what is there does not match its index)."""
    for index_path in sorted(root.glob(f"*/*/{INDEX_FILE}")):
        try:
            index = json.loads(index_path.read_text())
            if index.get("model") != model:
                continue
            ranges = {d: (int(o), int(n)) for d, o, n in index["tensors"]}
            blob = index_path.parent / WEIGHTS_FILE
            with blob.open("rb") as source:
                for digest, (offset, length) in ranges.items():
                    source.seek(offset)
                    if hashlib.sha256(source.read(length)).hexdigest() != digest:
                        raise ValueError(f"{blob}: a tensor does not match its index")
        except (OSError, ValueError, KeyError, TypeError):
            continue  # damaged or foreign: the next candidate, or new weights
        return SharedWeights(blob, model, ranges)
    return None


def share_weights(onnx_path: Path, shared: SharedWeights) -> str:
    """Rewrite the part at `onnx_path` to read its tensors from `shared` (linked beside it); the SHA-256 of
    the ranges it now reads, in order (or of nothing, when none were found)."""
    import onnx

    proto = onnx.load(str(onnx_path), load_external_data=False)  # exported just now: all inside
    used = hashlib.sha256()
    for tensor in proto.graph.initializer:
        data = _tensor_bytes(tensor)
        where = shared.ranges.get(hashlib.sha256(data).hexdigest()) if len(data) >= INLINE_BYTES else None
        if where is None:
            continue
        used.update(data)
        offset, length = where
        tensor.ClearField("raw_data")
        for field in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data"):
            tensor.ClearField(field)
        del tensor.external_data[:]
        for key, value in (("location", WEIGHTS_FILE), ("offset", str(offset)), ("length", str(length))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        tensor.data_location = onnx.TensorProto.EXTERNAL
    _replace_atomically(onnx_path, lambda out: out.write(proto.SerializeToString()))
    for name in (WEIGHTS_FILE, INDEX_FILE):
        link(shared.path.parent / name, onnx_path.parent / name)
    return used.hexdigest()


def link(source: Path, target: Path) -> None:
    """`target` becomes a hard link to `source` (a copy where the file system has no hard links)."""
    if target.exists() and os.path.samefile(source, target):
        return
    temporary = target.with_name(f".{target.name}.link")
    temporary.unlink(missing_ok=True)
    try:
        os.link(source, temporary)
    except OSError:
        import shutil

        shutil.copyfile(source, temporary)
    os.replace(temporary, target)


def used_ranges_sha256(model_bytes: bytes, weights: Path) -> str:
    """The SHA-256 of the ranges of `weights` the ONNX `model_bytes` refers to, in its order (as recorded at
    export): what the serving side checks before it loads them."""
    import onnx

    proto = onnx.load_from_string(model_bytes)
    used = hashlib.sha256()
    with weights.open("rb") as source:
        for tensor in proto.graph.initializer:
            if tensor.data_location == onnx.TensorProto.EXTERNAL:
                fields = {entry.key: entry.value for entry in tensor.external_data}
                source.seek(int(fields.get("offset", 0)))
                used.update(source.read(int(fields["length"])))
    return used.hexdigest()


def bytes_on_disk(root: Path) -> int:
    """What a repository takes on disk: each file once, however many hard links it has."""
    files = {}
    for path in root.rglob("*"):
        if path.is_file():
            info = path.stat()
            files[(info.st_dev, info.st_ino)] = info.st_size
    return sum(files.values())
