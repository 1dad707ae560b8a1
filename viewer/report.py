"""A radiograph's header facts as a plain dict (the inspector's JSON; the study list reads the same)."""

from __future__ import annotations

from typing import Any

from viewer.radiograph import Radiograph


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else round(float(value), 6)


def describe(radiograph: Radiograph) -> dict[str, Any]:
    low, high = radiograph.value_range
    spacing = radiograph.pixel_spacing_mm
    return {
        "path": radiograph.path,
        "ok": True,
        "format": radiograph.file_format,
        "modality": radiograph.info.modality or None,
        "rows": radiograph.rows,
        "columns": radiograph.columns,
        "frames": radiograph.frames,
        "photometric": radiograph.photometric,
        "bits_stored": radiograph.bits_stored,
        "transfer_syntax": radiograph.transfer_syntax,
        "pixel_spacing_mm": [_number(spacing[0]), _number(spacing[1])] if spacing else None,
        "spacing_source": radiograph.spacing_source.value if radiograph.spacing_source else None,
        "window": [_number(radiograph.window.center), _number(radiograph.window.width)],
        "window_source": radiograph.window_source.value,
        "inverted": radiograph.inverted,
        "min": _number(low),
        "max": _number(high),
        "notes": list(radiograph.notes),
    }
