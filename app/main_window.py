"""The main window: open radiographs and read them. (AI, study list and settings come with later issues.)"""

from __future__ import annotations

import sys
from pathlib import Path

from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QApplication, QFileDialog, QLabel, QMainWindow

from app.workers import Worker, start
from viewer.errors import RadiographError
from viewer.loader import load_radiograph
from viewer.radiograph import Radiograph
from viewer.widgets.canvas import RadiographCanvas

FILE_FILTER = "Radiographs (*.dcm *.dicom *.png *.jpg *.jpeg *.tif *.tiff);;All files (*)"


class MainWindow(QMainWindow):
    def __init__(self) -> None:
        super().__init__()
        self.setWindowTitle("MedEdge Viewer")
        self.canvas = RadiographCanvas(self)
        self.setCentralWidget(self.canvas)
        self.info_label = QLabel("Open a radiograph (Ctrl+O)")
        self.statusBar().addWidget(self.info_label, 1)
        self._workers: set[Worker] = set()  # keep running workers (and their signals) alive

        open_action = QAction("&Open…", self, shortcut=QKeySequence.StandardKey.Open)
        open_action.triggered.connect(self.choose_files)
        quit_action = QAction("&Quit", self, shortcut=QKeySequence.StandardKey.Quit)
        quit_action.triggered.connect(self.close)
        file_menu = self.menuBar().addMenu("&File")
        file_menu.addAction(open_action)
        file_menu.addAction(quit_action)

    def choose_files(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open radiograph", "", FILE_FILTER)
        if path:
            self.open_path(path)

    def open_path(self, path: str | Path) -> Worker:
        """Load in the background; the window stays responsive and shows the result or the reason."""
        self.info_label.setText(f"Loading {Path(path).name}…")
        worker = Worker(load_radiograph, path)
        worker.signals.returned.connect(self._show)
        worker.signals.errored.connect(lambda exc, p=path: self._show_error(p, exc))
        worker.signals.finished.connect(lambda w=worker: self._workers.discard(w))
        self._workers.add(worker)
        return start(worker)

    def _show(self, radiograph: Radiograph) -> None:
        self.canvas.show_radiograph(radiograph)
        info = radiograph.info
        parts = [Path(radiograph.path).name, info.modality, info.view_position,
                 f"{radiograph.columns}×{radiograph.rows}",
                 f"W {radiograph.window.center:g}/{radiograph.window.width:g} ({radiograph.window_source.value})"]
        if radiograph.pixel_spacing_mm:
            parts.append(f"{radiograph.pixel_spacing_mm[0]:.3g} mm/px ({radiograph.spacing_source.value})")
        self.info_label.setText("  ·  ".join(p for p in parts if p))

    def _show_error(self, path: str | Path, exc: BaseException) -> None:
        reason = exc.reason if isinstance(exc, RadiographError) else f"unexpected error: {exc}"
        self.info_label.setText(f"{Path(path).name}: {reason}")


def run_viewer(paths: list[str]) -> int:
    app = QApplication.instance() or QApplication(sys.argv[:1])
    window = MainWindow()
    window.resize(1280, 900)
    window.show()
    if paths:
        window.open_path(paths[0])
    return app.exec()
