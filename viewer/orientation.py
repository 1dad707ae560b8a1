"""Which way the patient lies on screen: the letters a viewer draws at the image's edges (R/L, A/P, H/F), from the
file's Patient Orientation (0020,0020) and the rotation and flips the reader applied. Qt-free.

Patient Orientation gives the patient direction of the image's rows (left to right across the image) and of its
columns (top to bottom), e.g. "L\\F" for a PA chest radiograph: the patient's left is on the right of the image.
"""

from __future__ import annotations

_OPPOSITE = {"L": "R", "R": "L", "A": "P", "P": "A", "H": "F", "F": "H"}
EDGES = ("left", "right", "top", "bottom")


def opposite(direction: str) -> str:
    """"L" → "R", "AF" → "PH"."""
    return "".join(_OPPOSITE[letter] for letter in direction)


def parse_orientation(text: str) -> tuple[str, str] | None:
    """The rows' and the columns' directions of a Patient Orientation value, or None when it gives no usable pair
    (empty, one value, letters other than L R A P H F): no letters are drawn rather than wrong ones."""
    values = [value.strip().upper() for value in text.split("\\")]
    if len(values) != 2 or not all(values) or any(letter not in _OPPOSITE for value in values for letter in value):
        return None
    return values[0], values[1]


def edge_labels(orientation: tuple[str, str], rotation: int, flip_horizontal: bool,
                flip_vertical: bool) -> dict[str, str]:
    """The patient direction at each screen edge ("left", "right", "top", "bottom") once the image is flipped (in
    its own axes) and then rotated `rotation` degrees clockwise, as the canvas draws it."""
    rows, columns = orientation
    directions = {(1, 0): rows, (-1, 0): opposite(rows), (0, 1): columns, (0, -1): opposite(columns)}
    turns = (rotation // 90) % 4
    labels = {}
    for (x, y), direction in directions.items():
        x, y = (-x if flip_horizontal else x), (-y if flip_vertical else y)
        for _ in range(turns):  # 90° clockwise on a screen whose y points down: (x, y) → (−y, x)
            x, y = -y, x
        labels[{(1, 0): "right", (-1, 0): "left", (0, 1): "bottom", (0, -1): "top"}[x, y]] = direction
    return labels
