"""The image canvas: a `Radiograph` through the display pipeline, with reading tools and AI overlays.

Pixels come from `render_8bit` (the one display pipeline); boxes and heat maps come from `Findings`.
Image, overlays and measurements live in one item group in image pixel coordinates, so rotating or
flipping the group turns them together and the cursor always maps back to original pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QPainter, QPen, QTransform
from PySide6.QtWidgets import QGraphicsDropShadowEffect, QGraphicsRectItem, QLabel

from viewer import corner_text
from viewer.display import render_8bit
from viewer.orientation import EDGES, edge_labels, parse_orientation
from viewer.radiograph import Radiograph, Window
from viewer.voi import preset_window

BOX_COLOUR = QColor(255, 200, 0)
# Projection radiographs have no Hounsfield scale: a preset spans percentiles of the image's own displayed
# brightness — Lung the darker three quarters (the mediastinum white), Soft tissue the brighter two thirds (the
# lungs black), Bone nearly all but the darkest fifth. CT keeps the usual HU windows.
PERCENTILE_PRESETS = {"Lung": (1.0, 75.0), "Bone": (20.0, 99.9), "Soft tissue": (35.0, 99.5)}
HU_PRESETS = {"Lung": (-600.0, 1500.0), "Bone": (400.0, 1800.0), "Soft tissue": (40.0, 400.0)}
PRESETS = ("DICOM default", "Lung", "Bone", "Soft tissue", "Full range")
CORNERS = ("top-left", "top-right", "bottom-left", "bottom-right")


@dataclass(frozen=True)
class DisplayState:
    window: Window | None = None   # None: the file's own VOI (window or VOI LUT)
    invert: bool = False           # on top of the file's MONOCHROME1 / INVERSE handling
    rotation: int = 0              # degrees clockwise: 0, 90, 180, 270
    flip_horizontal: bool = False
    flip_vertical: bool = False


class _ViewBox(pg.ViewBox):
    """Left drag pans, wheel zooms around the cursor (pyqtgraph), right drag sets window/level."""

    windowDragged = Signal(float, float)  # dx, dy in screen pixels since the last event

    def mouseDragEvent(self, event, axis=None) -> None:
        if event.button() == Qt.MouseButton.RightButton:
            event.accept()
            delta = event.screenPos() - event.lastScreenPos()
            self.windowDragged.emit(float(delta.x()), float(delta.y()))
            return
        super().mouseDragEvent(event, axis)


class RadiographCanvas(pg.GraphicsLayoutWidget):
    cursorMoved = Signal(str)        # "x, y px · value · mm" under the cursor, or ""
    displayChanged = Signal(object)  # the DisplayState after any change
    measured = Signal(str)           # the measurement made or moved last, as the status bar says it ("" for none)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setBackground("k")
        # scaled images drawn with bilinear filtering, as reading viewers do (nearest pixels showed blocks at zoom)
        self.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
        self.view = _ViewBox(lockAspect=True, invertY=True, enableMenu=False)
        self.addItem(self.view)
        self.group = pg.ItemGroup()
        self.view.addItem(self.group)
        self.image_item = pg.ImageItem(axisOrder="row-major")
        self.image_item.setParentItem(self.group)
        self.heat_item = pg.ImageItem(axisOrder="row-major")
        self.heat_item.setParentItem(self.group)
        lut = pg.colormap.get("inferno").getLookupTable(nPts=256, alpha=True)
        lut[:, 3] = np.linspace(0, 255, 256)  # weak activation fades out: the radiograph stays readable
        self.heat_item.setLookupTable(lut)
        self.heat_item.setZValue(5)
        self.heat_item.setVisible(False)
        self.colour_bar: pg.ColorBarItem | None = None
        self.radiograph: Radiograph | None = None
        self.state = DisplayState()
        self._box_items: list[tuple[float, QGraphicsRectItem, pg.TextItem]] = []
        self._confidence = 0.4
        self._boxes_visible = True
        self._rulers: list[tuple[pg.LineSegmentROI, pg.TextItem]] = []  # the distance lines, as drawn
        self._ratio: tuple[pg.LineSegmentROI, pg.LineSegmentROI, pg.TextItem] | None = None  # heart, thorax, label
        self._ratio_across_rows = False  # its widths along the image's rows (drawn with the image turned sideways)
        self._touched: list[pg.LineSegmentROI] = []  # the measurement lines, last drawn or dragged last (Delete)
        self._line_origins: dict[int, tuple[float, float]] = {}  # each line's origin when last seen
        # each image's measurements while another is shown: its path → the lines' ends, the ratio's (or None)
        self._kept: dict[str, tuple[list, tuple | None]] = {}
        self.view.windowDragged.connect(self._drag_window)
        self.scene().sigMouseMoved.connect(self._mouse_moved)
        # the text in the corners and the patient's directions at the edges, over the viewport (not in the scene:
        # they stay put and readable whatever the zoom, rotation or flip)
        self.text: dict[str, QLabel] = {place: self._text_label(place) for place in (*CORNERS, *EDGES)}
        self.text_visible = True
        self._hiding_identity = False
        self._texts: dict[str, list[str]] = {}  # each place's lines, before they are cut to fit
        self.view.sigRangeChanged.connect(lambda *_: self._update_text())
        self.view.sigResized.connect(lambda *_: self._show_text())  # (the colour bar came or went beside it)
        self.displayChanged.connect(lambda _: self._update_text())

    # ------------------------------------------------------------ the text over the image

    def _text_label(self, place: str) -> QLabel:
        label = QLabel(self)
        label.setTextFormat(Qt.TextFormat.PlainText)  # a header's "<b>" is text, not markup
        label.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        edge = place in EDGES
        label.setStyleSheet("color:#f0f0f0;"  # a letter on a dark plate: readable on a white image edge too
                            + ("background:rgba(0,0,0,140);padding:0 3px;font-weight:bold;font-size:15pt;" if edge
                               else "background:transparent;font-size:9pt;"))
        label.setAlignment(Qt.AlignmentFlag.AlignRight if place.endswith("right") and not edge
                           else Qt.AlignmentFlag.AlignLeft)
        shadow = QGraphicsDropShadowEffect(label)  # a black outline: readable over white bone and black air alike
        shadow.setBlurRadius(0)
        shadow.setOffset(1, 1)
        shadow.setColor(QColor(0, 0, 0))
        label.setGraphicsEffect(shadow)
        return label

    def set_text_visible(self, visible: bool) -> None:
        """The corner text and the orientation letters on or off (T)."""
        self.text_visible = visible
        self._update_text()

    def zoom(self) -> float | None:
        """Screen pixels per image pixel, or None with no image."""
        if self.radiograph is None:
            return None
        size = self.view.viewPixelSize()[0]
        return 1.0 / size if size > 0 else None

    def _update_text(self) -> None:
        r, s = self.radiograph, self.state
        texts: dict[str, list[str]] = {place: [] for place in (*CORNERS, *EDGES)}
        if r is not None and self.text_visible:
            if not self._hiding_identity:
                texts["top-left"], texts["top-right"] = corner_text.patient_lines(r), corner_text.study_lines(r)
            texts["bottom-left"] = corner_text.display_lines(self.current_window(), self.zoom())
            texts["bottom-right"] = corner_text.state_lines(r, s.invert, s.rotation, s.flip_horizontal,
                                                            s.flip_vertical)
            orientation = parse_orientation(r.info.patient_orientation)
            if orientation is not None:
                for edge, direction in edge_labels(orientation, s.rotation, s.flip_horizontal,
                                                   s.flip_vertical).items():
                    texts[edge] = [direction]
        self._texts = texts
        self._show_text()

    def _view_rect(self):
        """Where the image's view box is, in this widget's pixels (the heat map's colour bar stands beside it)."""
        return self.mapFromScene(self.view.sceneBoundingRect()).boundingRect()

    def _show_text(self) -> None:
        """Each corner's lines cut to its half of the view, less room for the letter between (long names ran into
        the other corner in a small window); then all placed."""
        area, margin = self._view_rect(), 8
        room = max(area.width() // 2 - margin - 24, 40)
        for place, lines in self._texts.items():
            label = self.text[place]
            if place in CORNERS:
                metrics = label.fontMetrics()
                lines = [metrics.elidedText(line, Qt.TextElideMode.ElideRight, room) for line in lines]
            label.setText("\n".join(lines))
            label.setVisible(bool(lines))
            label.adjustSize()
        for place, label in self.text.items():
            w, h = label.width(), label.height()
            x = {"left": area.left() + margin, "right": area.right() - w - margin}.get(
                place.split("-")[-1], area.center().x() - w // 2)
            y = {"top": area.top() + margin, "bottom": area.bottom() - h - margin}.get(
                place.split("-")[0], area.center().y() - h // 2)
            label.move(int(x), int(y))

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        if hasattr(self, "text"):  # (the base class resizes before __init__ has made the labels)
            self._show_text()

    def grab_without_identity(self):
        """The canvas as a picture without the patient's and the study's text (an exported view leaves no patient
        details behind); the orientation, window and display state stay."""
        self._hiding_identity = True  # (held while grabbing: an update on the way must not put it back)
        self._update_text()
        try:
            return self.grab()
        finally:
            self._hiding_identity = False
            self._update_text()

    # ------------------------------------------------------------ the image

    def show_radiograph(self, radiograph: Radiograph) -> None:
        self._put_away_rulers()
        self.radiograph = radiograph
        self.state = DisplayState()
        self.clear_findings()
        self.cursorMoved.emit("")  # the readout was of the image before (an 8-bit JPEG said "value 326")
        self._render()
        self._apply_orientation()
        self.fit()
        lines, ratio = self._kept.pop(radiograph.path, ([], None))
        for start, end in lines:
            self._add_ruler(start, end)
        if ratio is not None:
            self._add_ratio(*ratio)

    def show_nothing(self) -> None:
        """Nothing shown (the last study was closed): the image and its overlays are released.
        (Not `clear`: GraphicsLayoutWidget binds that name to its layout's clear, which drops the view.)"""
        self._put_away_rulers()
        self.radiograph = None
        self.state = DisplayState()
        self.clear_findings()
        self.cursorMoved.emit("")
        self.image_item.clear()
        self._update_text()

    def displayed_image(self) -> np.ndarray | None:
        return self.image_item.image

    def current_window(self) -> Window | None:
        """The window in use: the user's, else the image's own; None with neither (no image shown)."""
        if self.state.window is not None or self.radiograph is None:
            return self.state.window
        return self.radiograph.window

    def _render(self) -> None:
        if self.radiograph is None:
            return
        invert = self.radiograph.inverted != self.state.invert
        image = render_8bit(self.radiograph, window=self.state.window, invert=invert)
        self.image_item.setImage(image, levels=(0, 255), autoLevels=False, autoDownsample=False)
        self.displayChanged.emit(self.state)

    def set_window(self, window: Window | None) -> None:
        self.state = DisplayState(window, self.state.invert, self.state.rotation, self.state.flip_horizontal,
                                  self.state.flip_vertical)
        self._render()

    def apply_preset(self, name: str) -> None:
        if self.radiograph is None:
            return
        if name == "DICOM default":
            self.set_window(None)
            return
        low, high = self.radiograph.value_range
        if name == "Full range":
            self.set_window(Window.from_range(low, high))
            return
        if self.radiograph.info.modality == "CT":
            self.set_window(Window(*HU_PRESETS[name]))
            return
        bright_is_high = self.radiograph.inverted == self.state.invert
        self.set_window(preset_window(self.radiograph.pixels, PERCENTILE_PRESETS[name], bright_is_high))

    def set_invert(self, invert: bool) -> None:
        self.state = DisplayState(self.state.window, invert, self.state.rotation, self.state.flip_horizontal,
                                  self.state.flip_vertical)
        self._render()

    def _drag_window(self, dx: float, dy: float) -> None:
        """Right drag: right widens the window (less contrast), down darkens the image — on a MONOCHROME1 image,
        whose high values are dark, too (raising its level brightened it: the same gesture did the opposite)."""
        window = self.current_window()
        if self.radiograph is None or window is None:
            return
        low, high = self.radiograph.value_range
        step = max(high - low, 1.0) / 600.0
        darker = -1.0 if self.radiograph.inverted != self.state.invert else 1.0  # the level's direction that darkens
        self.set_window(Window(window.center + darker * dy * step, max(window.width + dx * step, 1.0)))

    # ------------------------------------------------------------ geometry

    def fit(self) -> None:
        """The whole (rotated) image in view. Explicit, as ViewBox auto-range does not look inside groups."""
        if self.radiograph is None:
            return
        rect = self.image_item.mapRectToView(self.image_item.boundingRect())
        self.view.setRange(rect, padding=0.02)

    def one_to_one(self) -> None:
        """One image pixel per screen pixel, centred on what is shown now."""
        if self.radiograph is None:
            return
        centre = self.view.viewRect().center()
        width, height = self.view.width(), self.view.height()
        self.view.setRange(QRectF(centre.x() - width / 2, centre.y() - height / 2, width, height), padding=0)

    def rotate(self, degrees: int) -> None:
        self.state = DisplayState(self.state.window, self.state.invert, (self.state.rotation + degrees) % 360,
                                  self.state.flip_horizontal, self.state.flip_vertical)
        self._apply_orientation()

    def flip(self, horizontal: bool) -> None:
        """Mirror the image as seen: left–right (horizontal) or top–bottom, whatever its rotation (the flips are
        kept in the image's own axes, before the rotation: at 90° or 270° the screen's horizontal is its vertical)."""
        if self.state.rotation % 180:
            horizontal = not horizontal
        s = self.state
        self.state = DisplayState(s.window, s.invert, s.rotation, s.flip_horizontal != horizontal,
                                  s.flip_vertical != (not horizontal))
        self._apply_orientation()

    def _apply_orientation(self) -> None:
        if self.radiograph is None:
            return
        rows, cols = self.radiograph.rows, self.radiograph.columns
        transform = QTransform()
        transform.translate(cols / 2, rows / 2)
        transform.rotate(self.state.rotation)
        transform.scale(-1 if self.state.flip_horizontal else 1, -1 if self.state.flip_vertical else 1)
        transform.translate(-cols / 2, -rows / 2)
        self.group.setTransform(transform)
        self.fit()
        self.displayChanged.emit(self.state)

    def image_position(self, scene_point: QPointF) -> tuple[float, float] | None:
        """Original-image (x, y) in pixels under a scene point, or None outside the image."""
        if self.radiograph is None:
            return None
        point = self.group.mapFromScene(scene_point)
        x, y = point.x(), point.y()
        if 0 <= x < self.radiograph.columns and 0 <= y < self.radiograph.rows:
            return x, y
        return None

    def describe_position(self, x: float, y: float) -> str:
        r = self.radiograph
        if r is None:  # no image: nothing under the cursor
            return ""
        value = r.pixels[int(y), int(x)]
        text = f"x {int(x)}, y {int(y)} px · value {value:g}"
        if r.pixel_spacing_mm:
            row_mm, col_mm = r.pixel_spacing_mm
            text += f" · {x * col_mm:.1f}, {y * row_mm:.1f} mm"
        return text

    def _mouse_moved(self, scene_point) -> None:
        position = self.image_position(scene_point)
        self.cursorMoved.emit(self.describe_position(*position) if position else "")

    # ------------------------------------------------------------ distance tool

    def start_ruler(self) -> None:
        """Another distance line across the middle third of the image (below the ones there); drag its ends onto
        the structure. Several lines stay, each with its length."""
        if self.radiograph is None:
            return
        rows, cols = self.radiograph.rows, self.radiograph.columns
        y = rows / 2 + (len(self._rulers) % 6) * rows / 12
        self._add_ruler((cols / 3, y), (2 * cols / 3, y))

    def _add_ruler(self, start: tuple[float, float], end: tuple[float, float]) -> None:
        ruler = pg.LineSegmentROI([list(start), list(end)], pen=pg.mkPen((0, 220, 255), width=2))
        ruler.setParentItem(self.group)
        ruler.setZValue(20)
        self._line_origins[id(ruler)] = (ruler.pos().x(), ruler.pos().y())
        # on a dark plate: cyan alone was unreadable over bright lung and bone; at the line's middle, not its end
        # (where it ran off the image)
        label = pg.TextItem(color=(0, 220, 255), anchor=(0.5, 1.2), fill=pg.mkBrush(0, 0, 0, 170))
        label.setParentItem(self.group)
        label.setZValue(21)
        self._rulers.append((ruler, label))
        self._touch(ruler)
        ruler.sigRegionChanged.connect(self._update_ruler)  # (it passes the line; a lambda kept every line alive)
        self._update_ruler(ruler)

    def _ends(self, ruler: pg.LineSegmentROI) -> tuple[tuple[float, float], tuple[float, float]]:
        """The line's two ends in image pixels."""
        (x1, y1), (x2, y2) = [(ruler.pos().x() + h.pos().x(), ruler.pos().y() + h.pos().y())
                              for h in ruler.getHandles()]
        return (x1, y1), (x2, y2)

    def ruler_lengths(self) -> list[tuple[float, str]]:
        """(length, unit) of each distance line, oldest first: mm when the spacing is known, else pixels."""
        if self.radiograph is None:
            return []
        lengths = []
        for ruler, _ in self._rulers:
            (x1, y1), (x2, y2) = self._ends(ruler)
            if self.radiograph.pixel_spacing_mm:
                row_mm, col_mm = self.radiograph.pixel_spacing_mm
                lengths.append((math.hypot((x2 - x1) * col_mm, (y2 - y1) * row_mm), "mm"))
            else:
                lengths.append((math.hypot(x2 - x1, y2 - y1), "px"))
        return lengths

    def ruler_length(self) -> tuple[float, str] | None:
        """The (length, unit) of the line drawn or dragged last, or None without a line."""
        lines = [ruler for ruler, _ in self._rulers]
        last = next((line for line in reversed(self._touched) if line in lines), None)
        return None if last is None else self.ruler_lengths()[lines.index(last)]

    def _keep_on_image(self, line: pg.LineSegmentROI) -> None:
        """A line stays on the image (dragged past its edge, a width could exceed the image's): the whole line
        dragged is put back inside as it is; an end dragged out stops at the edge. Through pyqtgraph's own moves,
        so its record of the ends stays true (a next drag restored an end from it)."""
        if self.radiograph is None:
            return
        width, height = float(self.radiograph.columns), float(self.radiograph.rows)
        ends = self._ends(line)
        moved_whole = self._line_moved_whole(line)
        if all(0 <= x <= width and 0 <= y <= height for x, y in ends):
            return
        xs, ys = [x for x, _ in ends], [y for _, y in ends]
        if max(xs) - min(xs) <= width and max(ys) - min(ys) <= height and moved_whole:
            dx = -min(xs) if min(xs) < 0 else min(width - max(xs), 0.0)
            dy = -min(ys) if min(ys) < 0 else min(height - max(ys), 0.0)
            self._line_origins[id(line)] = (line.pos().x() + dx, line.pos().y() + dy)
            line.setPos(line.pos() + QPointF(dx, dy))
            return
        for handle, (x, y) in zip(line.getHandles(), ends, strict=True):
            inside = QPointF(min(max(x, 0.0), width), min(max(y, 0.0), height))
            if (inside.x(), inside.y()) != (x, y):
                line.movePoint(handle, inside, coords="parent", finish=False)

    def _line_moved_whole(self, line: pg.LineSegmentROI) -> bool:
        """Whether the line was dragged as a whole since it was last seen (its origin moved), not by an end."""
        before = self._line_origins.get(id(line))
        now = (line.pos().x(), line.pos().y())
        self._line_origins[id(line)] = now
        return before is not None and before != now

    def _update_ruler(self, ruler: pg.LineSegmentROI) -> None:
        found = [i for i, (r, _) in enumerate(self._rulers) if r is ruler]
        if not found or self.radiograph is None:  # removed meanwhile
            return
        self._keep_on_image(ruler)
        self._touch(ruler)
        index = found[0]
        label = self._rulers[index][1]
        (x1, y1), (x2, y2) = self._ends(ruler)
        label.setPos((x1 + x2) / 2, (y1 + y2) / 2)
        length, unit = self.ruler_lengths()[index]
        text = f"{length:.1f} {unit}"
        label.setText(text)
        self.measured.emit(f"Distance {text}")

    def _touch(self, line: pg.LineSegmentROI) -> None:
        if line in self._touched:
            self._touched.remove(line)
        self._touched.append(line)

    def remove_ruler(self) -> None:
        """The measurement drawn or dragged last goes (Delete): a distance line, or the cardiothoracic ratio; the
        status bar then says the one touched before it, if any."""
        if not self._touched:
            return
        last = self._touched[-1]
        if self._ratio is not None and last in self._ratio[:2]:
            self._drop_ratio()
        else:
            found = [i for i, (ruler, _) in enumerate(self._rulers) if ruler is last]
            self._drop(*self._rulers.pop(found[0]))
            self._touched.remove(last)
        self._say_last()

    def _say_last(self) -> None:
        """The status bar says the measurement touched last (none: nothing)."""
        if not self._touched:
            self.measured.emit("")
        elif self._ratio is not None and self._touched[-1] in self._ratio[:2]:
            self._update_ratio()
        else:
            self._update_ruler(self._touched[-1])

    def _drop(self, *items) -> None:
        for item in items:
            self._line_origins.pop(id(item), None)
            if item.scene() is not None:
                item.scene().removeItem(item)

    def _put_away_rulers(self) -> None:
        """The measurements of the image leaving the screen are kept for its return (they are part of a read)."""
        if self.radiograph is not None and (self._rulers or self._ratio is not None):
            ratio = None if self._ratio is None else (self._ends(self._ratio[0]), self._ends(self._ratio[1]),
                                                      self._ratio_across_rows)
            self._kept[self.radiograph.path] = ([self._ends(ruler) for ruler, _ in self._rulers], ratio)
        for ruler, label in self._rulers:
            self._drop(ruler, label)
        self._rulers = []
        self._drop_ratio(said=False)
        self._touched = []
        self.measured.emit("")

    def forget_rulers(self, path: str) -> None:
        """The study was closed: its lines and its cardiothoracic ratio go with it."""
        self._kept.pop(path, None)

    # ------------------------------------------------------------ cardiothoracic ratio

    def toggle_ratio(self) -> None:
        """C: the cardiothoracic ratio's two widths on the image (again: off). Drag the heart's line onto the
        widest cardiac silhouette, the thorax's onto the widest inner rib cage; the ratio is of their widths across
        the screen as the image is turned when they are drawn (its columns, or its rows when turned sideways)."""
        if self._ratio is not None:
            self._drop_ratio()
            return
        if self.radiograph is None:
            return
        rows, cols = self.radiograph.rows, self.radiograph.columns
        if self.state.rotation % 180:  # turned sideways: lines across the screen run along the image's rows
            self._add_ratio(((0.6 * cols, 0.35 * rows), (0.6 * cols, 0.65 * rows)),
                            ((0.7 * cols, 0.15 * rows), (0.7 * cols, 0.85 * rows)), across_rows=True)
        else:
            self._add_ratio(((0.35 * cols, 0.6 * rows), (0.65 * cols, 0.6 * rows)),
                            ((0.15 * cols, 0.7 * rows), (0.85 * cols, 0.7 * rows)), across_rows=False)

    def _add_ratio(self, heart: tuple, thorax: tuple, across_rows: bool) -> None:
        """The ratio's lines; `across_rows`: its widths measured along the image's rows (it was drawn with the image
        turned sideways), else along its columns — kept so, however the image is turned afterwards."""
        lines = []
        for ends, colour in ((heart, (255, 120, 200)), (thorax, (120, 255, 140))):
            line = pg.LineSegmentROI([list(ends[0]), list(ends[1])], pen=pg.mkPen(colour, width=2))
            line.setParentItem(self.group)
            line.setZValue(20)
            self._line_origins[id(line)] = (line.pos().x(), line.pos().y())
            line.sigRegionChanged.connect(self._update_ratio)
            lines.append(line)
        label = pg.TextItem(color=(255, 255, 255), anchor=(0.5, 1.2), fill=pg.mkBrush(0, 0, 0, 170))
        label.setParentItem(self.group)
        label.setZValue(21)
        self._ratio = (lines[0], lines[1], label)
        self._ratio_across_rows = across_rows
        self._touch(lines[0])
        self._update_ratio()

    def cardiothoracic_ratio(self) -> tuple[float | None, float, float, str] | None:
        """(ratio, heart width, thorax width, unit) from the two lines' extents across the image (the ratio None
        while the lines make none), or None without the tool."""
        if self._ratio is None or self.radiograph is None:
            return None
        across_rows = self._ratio_across_rows  # the chest's width: the image axis the lines were drawn across
        widths = []
        for line in self._ratio[:2]:
            (x1, y1), (x2, y2) = self._ends(line)
            widths.append(abs(y2 - y1) if across_rows else abs(x2 - x1))
        spacing = self.radiograph.pixel_spacing_mm
        scale, unit = (spacing[0] if across_rows else spacing[1], "mm") if spacing else (1.0, "px")
        heart, thorax = widths[0] * scale, widths[1] * scale
        # no ratio where the thorax's line is not the wider: a heart wider than the chest is a misplaced line
        return (heart / thorax if 0 < heart <= thorax else None), heart, thorax, unit

    def _update_ratio(self, line: pg.LineSegmentROI | None = None) -> None:
        if self._ratio is None:
            return
        for each in self._ratio[:2]:
            self._keep_on_image(each)
        if line is not None:
            self._touch(line)
        measured = self.cardiothoracic_ratio()
        if measured is None:
            return
        ratio, heart, thorax, unit = measured
        heart_line, _, label = self._ratio
        (x1, y1), (x2, y2) = self._ends(heart_line)
        label.setPos((x1 + x2) / 2, min(y1, y2))
        shown = "—" if ratio is None else f"{ratio:.2f}"
        label.setText(f"CTR {shown}")
        self.measured.emit(f"CTR {shown} (heart {heart:.0f} {unit} / thorax {thorax:.0f} {unit})"
                           + (": the thorax's line must be the wider" if ratio is None else ""))

    def measurement_lines(self) -> list[tuple[tuple[float, float], tuple[float, float], str]]:
        """Every measurement on the image as (start, end, what it says), in image pixels: the distance lines with
        their lengths, the cardiothoracic ratio's two widths (for a presentation state)."""
        lines = [(*self._ends(ruler), label.textItem.toPlainText()) for ruler, label in self._rulers]
        measured = self.cardiothoracic_ratio()
        if measured is not None and self._ratio is not None:
            ratio, heart, thorax, unit = measured
            said = f"heart {heart:.0f} {unit}" if ratio is None else f"CTR {ratio:.2f} (heart {heart:.0f} {unit})"
            lines.append((*self._ends(self._ratio[0]), said))
            lines.append((*self._ends(self._ratio[1]), f"thorax {thorax:.0f} {unit}"))
        return lines

    def _drop_ratio(self, said: bool = True) -> None:
        if self._ratio is not None:
            self._drop(*self._ratio)
            self._touched = [line for line in self._touched if line not in self._ratio[:2]]
            self._ratio = None
            if said:
                self._say_last()

    # ------------------------------------------------------------ AI overlays

    def clear_findings(self) -> None:
        for _, rect, label in self._box_items:
            for item in (rect, label):
                if item.scene() is not None:
                    item.scene().removeItem(item)
        self._box_items = []
        self._hide_heat_map()

    def _hide_heat_map(self) -> None:
        """The heat map and its colour bar go (the bar would narrow the next study's image for nothing)."""
        self.heat_item.setVisible(False)
        if self.colour_bar is not None:
            self.removeItem(self.colour_bar)
            self.colour_bar = None

    def show_detections(self, detections) -> None:
        self.clear_findings()
        pen = QPen(BOX_COLOUR)
        pen.setCosmetic(True)
        pen.setWidthF(2)
        for detection in detections:
            x1, y1, x2, y2 = detection.box_xyxy
            rect = QGraphicsRectItem(x1, y1, x2 - x1, y2 - y1)
            rect.setPen(pen)
            rect.setParentItem(self.group)
            rect.setZValue(10)
            label = pg.TextItem(f"{detection.label} {detection.score:.2f}", color=BOX_COLOUR, anchor=(0, 1))
            label.setParentItem(self.group)
            label.setPos(x1, y1)
            label.setZValue(11)
            self._box_items.append((detection.score, rect, label))
        self._update_box_visibility()

    def set_confidence(self, threshold: float) -> None:
        """Hide boxes below `threshold` (no new analysis)."""
        self._confidence = threshold
        self._update_box_visibility()

    def set_boxes_visible(self, visible: bool) -> None:
        self._boxes_visible = visible
        self._update_box_visibility()

    def visible_box_count(self) -> int:
        return sum(rect.isVisible() for _, rect, _ in self._box_items)

    def _update_box_visibility(self) -> None:
        for score, rect, label in self._box_items:
            shown = self._boxes_visible and score >= self._confidence
            rect.setVisible(shown)
            label.setVisible(shown)

    def show_heat_map(self, heat: np.ndarray | None, opacity: float = 0.45) -> None:
        if heat is None:
            self._hide_heat_map()
            return
        self.heat_item.setImage(heat, levels=(0.0, 1.0), autoLevels=False)
        self.heat_item.setOpacity(opacity)
        self.heat_item.setVisible(True)
        if self.colour_bar is None:
            self.colour_bar = pg.ColorBarItem(values=(0, 1), colorMap=pg.colormap.get("inferno"),
                                              interactive=False, width=12, label="activation")
            self.colour_bar.setImageItem(self.heat_item)
            self.addItem(self.colour_bar)

    def set_heat_opacity(self, opacity: float) -> None:
        self.heat_item.setOpacity(opacity)
