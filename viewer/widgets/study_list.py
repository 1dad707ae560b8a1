"""The study list: the opened images as radiology viewers list a patient CD — patients, their studies, each
study's series — with each image's thumbnail and where its analysis stands."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PySide6.QtCore import QSignalBlocker, QSize, Qt, Signal
from PySide6.QtGui import QIcon, QImage, QPixmap
from PySide6.QtWidgets import QAbstractItemView, QTreeWidget, QTreeWidgetItem, QTreeWidgetItemIterator

from viewer.display import render_8bit
from viewer.names import readable_person_name
from viewer.radiograph import Radiograph

THUMBNAIL = 64
INDENT = 12  # per level: three levels still leave the image rows room in a narrow dock
PATH = Qt.ItemDataRole.UserRole  # an image row's path


@dataclass
class StudyRow:
    """What an image's row says (its patient, study and series are the rows above it) and where its analysis
    stands."""

    view: str
    modality: str
    status: str = "opened"

    def text(self) -> str:
        return f"{' · '.join(part for part in (self.view, self.modality) if part)}\n{self.status}"


@dataclass(frozen=True)
class _Place:
    """Where an image goes in the tree: each level's key (what tells two apart) and label (what a reader sees)."""

    levels: tuple[tuple[str, str], ...]  # (key, label) for the patient, the study, the series

    @classmethod
    def of(cls, radiograph: Radiograph) -> _Place:
        info, name = radiograph.info, Path(radiograph.path).name
        patient = readable_person_name(info.patient_name)
        date = info.study_date
        date = f"{date[:4]}-{date[4:6]}-{date[6:8]}" if len(date) == 8 and date.isdigit() else date
        series = " ".join(v for v in (info.modality or radiograph.file_format,
                                      f"#{info.series_number}" if info.series_number else "",
                                      info.series_description) if v)
        return cls((
            (f"{info.patient_id}\0{patient}",
             f"{patient or 'No name'} ({info.patient_id})" if info.patient_id else patient or "No patient details"),
            # a file without study or series identity (a PNG, a bare export) is a study of its own
            (info.study_instance_uid or radiograph.path,
             " · ".join(v for v in (date, info.study_description) if v) or name),
            (info.series_instance_uid or radiograph.path, series)))


def thumbnail_pixels(radiograph: Radiograph) -> np.ndarray:
    """The display image shrunk to the row height (no Qt: callable from a worker)."""
    image = render_8bit(radiograph)
    scale = THUMBNAIL / max(image.shape)
    small = cv2.resize(image, (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale))),
                       interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(small)


def _icon(small: np.ndarray) -> QIcon:
    qimage = QImage(small.data, small.shape[1], small.shape[0], small.strides[0], QImage.Format.Format_Grayscale8)
    return QIcon(QPixmap.fromImage(qimage.copy()))


class StudyList(QTreeWidget):
    studyChosen = Signal(str)  # an image's path

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setHeaderHidden(True)
        self.setColumnCount(1)
        self.setIconSize(QSize(THUMBNAIL, THUMBNAIL))
        self.setIndentation(INDENT)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setTextElideMode(Qt.TextElideMode.ElideRight)  # a long label ends in "…"; the tooltip has it whole
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.paths: list[str] = []  # the images, in the order they were added
        self.rows: dict[str, StudyRow] = {}
        self._images: dict[str, QTreeWidgetItem] = {}
        self._groups: dict[tuple[str, ...], QTreeWidgetItem] = {}  # keys down to a level → its row
        self.itemActivated.connect(self._chosen)  # double-click, or Enter
        self.itemSelectionChanged.connect(lambda: self._chosen(self.currentItem()))

    def add(self, radiograph: Radiograph, thumb: np.ndarray | None = None) -> None:
        if radiograph.path in self._images:
            return
        parent = self.invisibleRootItem()
        keys: tuple[str, ...] = ()
        for key, label in _Place.of(radiograph).levels:
            keys += (key,)
            if keys not in self._groups:
                group = QTreeWidgetItem(parent, [label])
                group.setToolTip(0, label)
                group.setExpanded(True)
                self._groups[keys] = group
            parent = self._groups[keys]
        item = QTreeWidgetItem(parent)
        item.setData(0, PATH, radiograph.path)
        item.setIcon(0, _icon(thumbnail_pixels(radiograph) if thumb is None else thumb))
        item.setSizeHint(0, QSize(0, THUMBNAIL + 8))
        self.paths.append(radiograph.path)
        self._images[radiograph.path] = item
        info = radiograph.info
        self.rows[radiograph.path] = StudyRow(" ".join(v for v in (info.view_position, info.laterality) if v),
                                              info.modality or radiograph.file_format)
        self._show(radiograph.path)

    def remove(self, path: str) -> None:
        """Forget an image's row, and the series, study and patient rows it leaves empty."""
        item = self._images.pop(path, None)
        if item is None:
            return
        self.paths.remove(path)
        self.rows.pop(path)
        with QSignalBlocker(self):  # the selection moves as rows go: the window chooses what it shows next
            while item is not None and item.childCount() == 0:
                parent = item.parent()
                (parent or self.invisibleRootItem()).removeChild(item)
                self._groups = {keys: group for keys, group in self._groups.items() if group is not item}
                item = parent

    def set_status(self, path: str, status: str) -> None:
        if path in self.rows:
            self.rows[path].status = status
            self._show(path)

    def status(self, path: str) -> str:
        return self.rows[path].status

    def in_order_shown(self) -> list[str]:
        """The images as the tree lists them, top to bottom (patient by patient: not the order they were added)."""
        order = []
        iterator = QTreeWidgetItemIterator(self)
        while (item := iterator.value()) is not None:
            if (path := item.data(0, PATH)) is not None:
                order.append(path)
            iterator += 1
        return order

    def mark_shown(self, path: str) -> None:
        """Select the row of the image on screen (shown from elsewhere: opening, closing, Analyze all). A patient,
        study or series row chosen above it stays selected: moving to the image row made the arrow keys jump
        over the rows between and stick."""
        item = self._images.get(path)
        current = self.currentItem()
        first_under_current = current
        while first_under_current is not None and first_under_current.childCount():
            first_under_current = first_under_current.child(0)
        if item is not None and current is not item and first_under_current is not item:
            with QSignalBlocker(self):  # it is shown already
                self.setCurrentItem(item)
            self.viewport().update()

    def _show(self, path: str) -> None:
        item, text = self._images[path], self.rows[path].text()
        item.setText(0, text)
        item.setToolTip(0, f"{text}\n{path}")

    def _chosen(self, item: QTreeWidgetItem | None) -> None:
        """An image row shows its image; a patient, study or series row the first image under it."""
        while item is not None and item.data(0, PATH) is None:
            item = item.child(0)
        if item is not None:
            self.studyChosen.emit(item.data(0, PATH))
