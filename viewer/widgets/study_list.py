"""The study list: one row per opened file with its thumbnail and the facts a reader sorts by."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QIcon, QImage, QPixmap
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem

from viewer.display import render_8bit
from viewer.radiograph import Radiograph

COLUMNS = ("", "Study")
THUMBNAIL = 64


@dataclass
class StudyRow:
    """What a row says: the facts a reader sorts by, and where the study's analysis stands."""

    patient: str
    date: str
    view: str
    modality: str
    status: str = "opened"

    def text(self) -> str:
        """Three short lines beside the thumbnail: they fit a narrow dock where six columns were cut off."""
        facts = " · ".join(part for part in (self.date, self.view, self.modality) if part)
        return f"{self.patient}\n{facts}\n{self.status}"


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


class StudyList(QTableWidget):
    studyChosen = Signal(str)  # path

    def __init__(self, parent=None) -> None:
        super().__init__(0, len(COLUMNS), parent)
        self.setHorizontalHeaderLabels(COLUMNS)
        self.setIconSize(QSize(THUMBNAIL, THUMBNAIL))
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setWordWrap(False)
        self.setTextElideMode(Qt.TextElideMode.ElideRight)  # a long name ends in "…"; the tooltip has it whole
        self.verticalHeader().setVisible(False)
        self.verticalHeader().setDefaultSectionSize(THUMBNAIL + 8)
        header = self.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Fixed)
        header.resizeSection(0, THUMBNAIL + 8)
        header.setStretchLastSection(True)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.paths: list[str] = []
        self.rows: dict[str, StudyRow] = {}
        self.cellDoubleClicked.connect(lambda row, _: self.studyChosen.emit(self.paths[row]))
        self.itemSelectionChanged.connect(self._selected)

    def add(self, radiograph: Radiograph, thumb: np.ndarray | None = None) -> int:
        if radiograph.path in self.paths:
            return self.paths.index(radiograph.path)
        row = self.rowCount()
        self.insertRow(row)
        self.paths.append(radiograph.path)
        icon = QTableWidgetItem(_icon(thumbnail_pixels(radiograph) if thumb is None else thumb), "")
        icon.setToolTip(radiograph.path)
        self.setItem(row, 0, icon)
        info = radiograph.info
        name = info.patient_name.replace("^", " ").strip() or radiograph.path.rsplit("/", 1)[-1]
        date = f"{info.study_date[:4]}-{info.study_date[4:6]}-{info.study_date[6:8]}" if len(info.study_date) == 8 \
            else info.study_date
        self.rows[radiograph.path] = StudyRow(name, date, info.view_position,
                                              info.modality or radiograph.file_format)
        self._show(radiograph.path)
        return row

    def remove(self, path: str) -> None:
        if path in self.paths:
            row = self.paths.index(path)
            self.paths.pop(row)
            self.rows.pop(path)
            self.removeRow(row)

    def set_status(self, path: str, status: str) -> None:
        if path in self.paths:
            self.rows[path].status = status
            self._show(path)

    def status(self, path: str) -> str:
        return self.rows[path].status

    def _show(self, path: str) -> None:
        text = self.rows[path].text()
        item = QTableWidgetItem(text)
        item.setToolTip(f"{text}\n{path}")
        self.setItem(self.paths.index(path), 1, item)

    def _selected(self) -> None:
        rows = self.selectionModel().selectedRows()
        if rows:
            self.studyChosen.emit(self.paths[rows[0].row()])

    def keyPressEvent(self, event) -> None:
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and self.currentRow() >= 0:
            self.studyChosen.emit(self.paths[self.currentRow()])
            return
        super().keyPressEvent(event)
