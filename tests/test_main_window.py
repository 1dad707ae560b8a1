"""The main window with real widgets under pytest-qt: open a file and see it displayed."""

import numpy as np

from app.main_window import MainWindow
from viewer.display import render_8bit
from viewer.loader import load_radiograph


def test_open_shows_the_radiograph_without_blocking(qtbot, shared_cxr):
    window = MainWindow()
    qtbot.addWidget(window)
    path = shared_cxr / "dicom/CR-MONO1-10-chest"
    worker = window.open_path(path)
    with qtbot.waitSignal(worker.signals.finished, timeout=20000):
        pass
    qtbot.waitUntil(lambda: window.canvas.displayed_image() is not None, timeout=5000)
    shown = window.canvas.displayed_image()
    assert np.array_equal(shown, render_8bit(load_radiograph(path)))
    assert "CR" in window.info_label.text() and "550/1024" in window.info_label.text()


def test_bad_file_shows_its_reason(qtbot, shared_cxr):
    window = MainWindow()
    qtbot.addWidget(window)
    worker = window.open_path(shared_cxr / "other/pydicom_test-SR.dcm")
    with qtbot.waitSignal(worker.signals.finished, timeout=20000):
        pass
    qtbot.waitUntil(lambda: "no image in this file" in window.info_label.text(), timeout=5000)
    assert window.canvas.displayed_image() is None
