"""The study list: one row per opened file with its thumbnail and the facts a reader sorts by."""

from __future__ import annotations

import cv2
import numpy as np
from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QIcon, QImage, QPixmap
from PySide6.QtWidgets import QAbstractItemView, QTableWidget, QTableWidgetItem

from viewer.display import render_8bit
from viewer.radiograph import Radiograph

COLUMNS = ("", "Patient", "Date", "View", "Modality", "Status")
THUMBNAIL = 64


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
        self.verticalHeader().setVisible(False)
        self.verticalHeader().setDefaultSectionSize(THUMBNAIL + 4)
        self.paths: list[str] = []
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
        for column, text in enumerate((name, date, info.view_position, info.modality or radiograph.file_format,
                                       "opened"), start=1):
            self.setItem(row, column, QTableWidgetItem(text))
        return row

    def remove(self, path: str) -> None:
        if path in self.paths:
            row = self.paths.index(path)
            self.paths.pop(row)
            self.removeRow(row)

    def set_status(self, path: str, status: str) -> None:
        if path in self.paths:
            self.setItem(self.paths.index(path), 5, QTableWidgetItem(status))

    def status(self, path: str) -> str:
        return self.item(self.paths.index(path), 5).text()

    def _selected(self) -> None:
        rows = self.selectionModel().selectedRows()
        if rows:
            self.studyChosen.emit(self.paths[rows[0].row()])

    def keyPressEvent(self, event) -> None:
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and self.currentRow() >= 0:
            self.studyChosen.emit(self.paths[self.currentRow()])
            return
        super().keyPressEvent(event)
