"""The text a radiology viewer writes in the image's corners: who and what is shown, and how (Qt-free).

Top left the patient, top right the study and the image, bottom left the window and the zoom, bottom right what
the reader changed (inverted, flipped, rotated) and what the pixels went through (lossy compression).
"""

from __future__ import annotations

from viewer.names import is_date, readable_date, readable_person_name, readable_time
from viewer.radiograph import Radiograph, Window

LONGEST = 40  # characters: a corner's line stays clear of the orientation letter between the corners


def patient_lines(radiograph: Radiograph) -> list[str]:
    info = radiograph.info
    birth = info.patient_birth_date if is_date(info.patient_birth_date) else ""  # (an anonymiser's hash is not)
    sex = info.patient_sex and f"Sex {info.patient_sex}"
    born = " · ".join(v for v in (birth and f"Born {readable_date(birth)}", sex) if v)
    return _fitted([readable_person_name(info.patient_name), info.patient_id and f"ID {info.patient_id}", born])


def study_lines(radiograph: Radiograph) -> list[str]:
    info = radiograph.info
    day = readable_date(info.study_date) if is_date(info.study_date) else ""
    when = " ".join(v for v in (day, readable_time(info.study_time) if day else "") if v)
    image = " ".join(v for v in (info.modality, info.view_position, info.laterality) if v)
    frames = f"frame 1 of {radiograph.frames}" if radiograph.frames > 1 else ""
    return _fitted([when, info.study_description, image, frames])


def _fitted(lines: list[str]) -> list[str]:
    return [line if len(line) <= LONGEST else line[:LONGEST - 1] + "…" for line in lines if line]


def display_lines(window: Window | None, zoom: float | None) -> list[str]:
    lines = [] if window is None else [f"W {window.width:.0f}  L {window.center:.0f}" if window.width >= 20
                                       else f"W {window.width:.4g}  L {window.center:.4g}"]
    return lines + ([f"Zoom {zoom * 100:.0f}%"] if zoom else [])


def state_lines(radiograph: Radiograph, inverted: bool, rotation: int, flip_horizontal: bool,
                flip_vertical: bool) -> list[str]:
    lines = []
    if inverted:
        lines.append("Inverted")
    if flip_horizontal != flip_vertical:  # one flip, in whichever axis: a mirror image (the letters say which way)
        lines.append("Mirrored")
    turned = (rotation + (180 if flip_horizontal and flip_vertical else 0)) % 360  # both flips: a half turn
    if turned:
        lines.append(f"Rotated {turned}°")
    if radiograph.info.lossy:
        lines.append("LOSSY COMPRESSED")  # a reader must know: fine detail may have been lost
    return lines
