"""What a desktop user expects of the window (pytest-qt, offscreen): it fits a 1366 × 768 screen with nothing cut
off in the Studies list and the findings panel, it is dark unless Settings say light, and it comes back with the
size and dock layout it was closed with."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PySide6.QtCore import QSettings, Qt
from PySide6.QtGui import QFontMetrics, QPalette
from PySide6.QtWidgets import QApplication, QDockWidget

from app.main_window import MainWindow, choose_platform, why_the_viewer_cannot_start
from app.settings import AppSettings, load_settings
from app.theme import Theme
from inference.config import ModelKind
from inference.models.findings import Findings, Mode, ModelRun

from conftest import ROOT
from dicom_factory import dataset, gradient, write
from test_main_window import open_and_wait

FINDINGS = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
            "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia")


@pytest.fixture
def store(tmp_path) -> QSettings:
    return QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)


def _window(qtbot, store, size=(1366, 768)) -> MainWindow:
    window = MainWindow(store)
    window.resize(*size)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    return window


def _dock(window: MainWindow, title: str) -> QDockWidget:
    return next(d for d in window.findChildren(QDockWidget) if d.windowTitle() == title)


def test_on_a_small_screen_nothing_is_cut_off_in_the_studies_and_the_findings(qtbot, store, tmp_path):
    window = _window(qtbot, store)
    study = write(dataset(gradient(256, 256, bits=12, seed=1), bits_stored=12, PatientName="Doe^Jane",
                          StudyDate="20240131", ViewPosition="PA"), tmp_path / "s.dcm")
    open_and_wait(qtbot, window, study)
    listing = window.study_list
    metrics = QFontMetrics(listing.font())
    rows = [listing.topLevelItem(0)]  # patient, study, series, image
    while rows[-1].childCount():
        rows.append(rows[-1].child(0))
    assert [row.text(0).splitlines() for row in rows] == [["Doe, Jane (TEST-0001)"], ["2024-01-31"], ["DX"],
                                                          ["PA · DX", "opened"]]
    for row in rows:
        room = listing.visualItemRect(row)
        assert 0 <= room.left() and room.right() <= listing.viewport().width()  # nothing past the edge
        for line in row.text(0).splitlines():  # whole, not elided
            assert metrics.horizontalAdvance(line) + listing.iconSize().width() * (row is rows[-1]) + 8 <= room.width()

    probabilities = {name: 0.5 for name in FINDINGS}
    findings = Findings(str(study), (), probabilities, {ModelKind.DETECTOR: ModelRun("demo", 32),
                                                        ModelKind.CLASSIFIER: ModelRun("demo", 10)},
                        Mode.LOCAL, timing_ms={"total": 900.0})
    window.studies.set_findings(window.current, findings)  # the findings panel follows the model
    qtbot.wait(50)
    panel, dock = window.findings_panel, _dock(window, "Findings")
    assert panel.minimumSizeHint().width() <= dock.width()  # every row's name, bar and threshold fit
    assert len(panel.rows) == 14 and all(button.isVisible() for button, _, _ in panel.rows.values())
    lowest = max(button.mapTo(window, button.rect().bottomLeft()).y() for button, _, _ in panel.rows.values())
    assert lowest < window.height() - window.statusBar().height()  # the 14th row is on screen
    assert window.width() <= 1366 and window.height() <= 768


def test_the_dicom_tags_show_binary_values_by_size_and_whole_tags_on_a_small_screen(qtbot, store, tmp_path):
    ds = dataset(gradient(256, 256, bits=12, seed=1), bits_stored=12, PatientName="Doe^Jane")
    ds.add_new(0x00091010, "OB", bytes(1_258_291))  # a private binary blob of 1.2 MiB
    study = write(ds, tmp_path / "s.dcm")
    window = _window(qtbot, store)
    open_and_wait(qtbot, window, study)
    _dock(window, "DICOM tags").raise_()
    qtbot.wait(50)
    tree = window.tag_browser.tree
    rows = {tree.topLevelItem(i).text(0): tree.topLevelItem(i) for i in range(tree.topLevelItemCount())}
    assert rows["(0002,0001)"].text(3) == "2 bytes"  # File Meta Information Version: bytes 00 01
    assert rows["(0009,1010)"].text(3) == "binary data, 1.2 MiB"
    assert not any(tree.topLevelItem(i).text(3).startswith(("b'", 'b"')) for i in range(tree.topLevelItemCount()))
    assert tree.sizeHintForColumn(0) <= tree.columnWidth(0)  # the widest tag whole, not "(0002,000…"
    assert tree.header().stretchLastSection()  # the value column takes the room left
    # an anonymised value longer than its VR allows: shown as the file has it, without pydicom's warning (which would
    # only reach the terminal)
    import warnings

    import pydicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.AccessionNumber = "d14a028c2a3a2bc9476102bb288234c415a2b01f828ea62ac5b3e42f"
    write(ds, tmp_path / "long.dcm")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        window.tag_browser.show_header(pydicom.dcmread(tmp_path / "long.dcm", stop_before_pixels=True))
    rows = {tree.topLevelItem(i).text(0): tree.topLevelItem(i) for i in range(tree.topLevelItemCount())}
    assert rows["(0008,0050)"].text(3) == "d14a028c2a3a2bc9476102bb288234c415a2b01f828ea62ac5b3e42f"


def test_a_name_in_several_scripts_reads_as_its_alphabetic_name_in_the_studies_and_the_title(qtbot, store, tmp_path):
    study = write(dataset(gradient(64, 64, bits=12, seed=1), bits_stored=12, SpecificCharacterSet="ISO_IR 192",
                          PatientName="Müller^Jörg=山田^太郎", Modality="CR"), tmp_path / "s.dcm")
    window = _window(qtbot, store)
    open_and_wait(qtbot, window, study)
    assert window.study_list.topLevelItem(0).text(0) == "Müller, Jörg (TEST-0001)"  # as "Doe^Jane" reads "Doe, Jane"
    assert window.windowTitle() == "MedEdge Viewer · Müller, Jörg · CR · s.dcm"
    assert window.studies.get(str(study)).radiograph.info.patient_name == "Müller^Jörg=山田^太郎"  # kept as read


def test_dark_by_default_light_from_settings(qtbot, store):
    window = _window(qtbot, store)
    assert window.settings.theme is Theme.DARK
    dark = QApplication.instance().palette().color(QPalette.ColorRole.Window)
    assert dark.lightness() < 80
    from dataclasses import replace

    window.apply_settings(replace(window.settings, theme=Theme.LIGHT))
    assert QApplication.instance().palette().color(QPalette.ColorRole.Window).lightness() > 180
    assert load_settings(store)[0].theme is Theme.LIGHT  # remembered
    window.apply_settings(replace(window.settings, theme=Theme.DARK))
    assert QApplication.instance().palette().color(QPalette.ColorRole.Window).lightness() < 80
    with pytest.raises(ValueError):
        Theme("sepia")


def test_the_window_comes_back_with_its_size_and_docks(qtbot, store):
    window = _window(qtbot, store, size=(760, 560))  # inside the offscreen screen (800 × 600)
    _dock(window, "Studies").hide()
    window.resizeDocks([_dock(window, "Findings")], [300], Qt.Orientation.Horizontal)
    qtbot.wait(50)
    width = _dock(window, "Findings").width()
    window.close()
    again = MainWindow(store)
    qtbot.addWidget(again)
    again.restore_layout()
    again.show()
    qtbot.waitExposed(again)
    assert (again.width(), again.height()) == (760, 560)
    assert not _dock(again, "Studies").isVisible() and _dock(again, "Findings").isVisible()
    assert abs(_dock(again, "Findings").width() - width) <= 2


def test_a_first_start_fits_the_screen(qtbot, tmp_path):
    """The offscreen screen is 800 × 600, smaller than 1440 × 900: the first start fills it (maximised), and the
    window is no larger than the screen. (On a 1366 × 768 X server tests/test_x11.py checks the same.)"""
    window = MainWindow(QSettings(str(tmp_path / "fresh.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(window)
    window.restore_layout()
    window.show()
    qtbot.waitExposed(window)
    screen = window.screen().availableGeometry()
    assert (screen.width(), screen.height()) < (1440, 900)
    assert window.isMaximized()
    assert window.width() <= screen.width() and window.height() <= screen.height()


def test_wayland_sessions_use_xcb_through_xwayland_unless_told_otherwise():
    wayland = {"WAYLAND_DISPLAY": "wayland-0", "DISPLAY": ":0"}
    choose_platform(wayland)
    assert wayland["QT_QPA_PLATFORM"] == "xcb"
    native = {"WAYLAND_DISPLAY": "wayland-0"}  # no XWayland: Qt's own choice (its wayland platform)
    choose_platform(native)
    assert "QT_QPA_PLATFORM" not in native
    chosen = {"WAYLAND_DISPLAY": "wayland-0", "DISPLAY": ":0", "QT_QPA_PLATFORM": "wayland"}
    choose_platform(chosen)
    assert chosen["QT_QPA_PLATFORM"] == "wayland"
    assert AppSettings().theme is Theme.DARK


def _start_viewer(*args: str) -> subprocess.CompletedProcess:
    """`python main.py ARGS` with no display in its environment."""
    bare = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *args], capture_output=True, text=True, cwd=ROOT,
                          env=bare, timeout=120)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="DISPLAY and WAYLAND_DISPLAY are Linux's")
def test_without_a_display_the_viewer_says_so_in_one_line_instead_of_qts_abort():
    done = _start_viewer()
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == ("mededge: no display to show the viewer on (neither DISPLAY nor WAYLAND_DISPLAY is set): "
                           "start it from a desktop session, or use a command such as infer or inspect "
                           "(mededge --help)\n")


def test_a_word_that_is_neither_a_command_nor_a_file_is_a_usage_error_before_qt_starts(tmp_path):
    done = _start_viewer("bogus")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == "mededge: bogus is neither a command nor a file or folder (mededge --help lists the commands)\n"
    # a file that exists goes on to the viewer, as does no file at all, wherever a display is named
    existing = str(write(dataset(gradient(64, 64, bits=12, seed=1), bits_stored=12), tmp_path / "bogus.dcm"))
    for environ in ({"DISPLAY": ":0"}, {"WAYLAND_DISPLAY": "wayland-0"}, {"QT_QPA_PLATFORM": "offscreen"}):
        assert why_the_viewer_cannot_start([existing, "missing.dcm"], environ, "linux") is None
        # a missing file named first is a file, not a mistyped command: the viewer opens the rest and says why not it
        assert why_the_viewer_cannot_start(["/nonexistent/file.dcm", existing], environ, "linux") is None
        assert why_the_viewer_cannot_start(["missing.dcm", existing], environ, "linux") is None
        assert why_the_viewer_cannot_start([], environ, "linux") is None
    assert why_the_viewer_cannot_start([existing], {}, "win32") is None  # Windows and macOS always have a screen


def test_dropping_several_files_opens_each_readable_one_and_names_each_refusal(qtbot, store, shared_cxr, tmp_path):
    """A drop of several files (the first unreadable): every radiograph is listed, the first that opened is
    shown, and one notice names each file that was not opened with its own reason."""
    from PySide6.QtCore import QMimeData, QPointF, QUrl
    from PySide6.QtGui import QDragEnterEvent, QDropEvent

    window = _window(qtbot, store)
    (tmp_path / "notes.txt").write_text("not an image")
    files = [tmp_path / "notes.txt", shared_cxr / "dicom/CR-MONO1-10-chest", shared_cxr / "other/pydicom_test-SR.dcm",
             shared_cxr / "raster/txv_nih_00027426_000_512px.png", tmp_path / "gone.dcm"]
    data = QMimeData()
    data.setUrls([QUrl.fromLocalFile(str(path)) for path in files])
    at, how = QPointF(200, 200), (Qt.DropAction.CopyAction, data, Qt.MouseButton.LeftButton,
                                  Qt.KeyboardModifier.NoModifier)
    enter = QDragEnterEvent(at.toPoint(), *how)
    assert QApplication.sendEvent(window, enter) and enter.isAccepted()  # the window takes files
    assert QApplication.sendEvent(window, QDropEvent(at, *how))
    qtbot.waitUntil(lambda: window.refusal_notice is not None, timeout=60_000)
    assert sorted(window.study_list.paths) == sorted(str(files[i]) for i in (1, 3))
    assert window.current == str(files[1])  # the first file was refused: the first in order that opened shows
    text = window.refusal_notice.text()
    assert "3 of 5 files could not be opened" in text
    for name, reason in (("notes.txt", "not"), ("pydicom_test-SR.dcm", "structured report"),
                         ("gone.dcm", "no such file")):
        assert name in text and reason in text, (name, text)
    assert not window.refusal_notice.isModal()
    assert window.statusBar().currentMessage() == "Opened 2 of 5; 3 not opened"


def test_relative_and_repeated_paths_from_the_command_line(qtbot, store, tmp_path, monkeypatch):
    """`main.py ./s.dcm ./s.dcm missing.dcm`: the study is shown (its path is normalised on loading) and the
    notice still comes once every file has finished."""
    study = write(dataset(gradient(128, 128, bits=12, seed=2), bits_stored=12), tmp_path / "s.dcm")
    monkeypatch.chdir(tmp_path)
    window = _window(qtbot, store)
    window.open_paths(["./s.dcm", "./s.dcm", "missing.dcm"])
    qtbot.waitUntil(lambda: window.refusal_notice is not None, timeout=60_000)
    assert window.current == str(Path("./s.dcm")) == "s.dcm" and window.study_list.paths == ["s.dcm"]
    assert "missing.dcm" in window.refusal_notice.text() and "1 of 3 files" in window.refusal_notice.text()
    assert study.exists()


def test_a_patient_cd_dropped_opens_the_images_its_dicomdir_lists(qtbot, store, tmp_path):
    """A CD's root folder dropped on the window: the images its DICOMDIR lists open, both patients'; an image
    the index lists but the media lacks is named in the notice; the DICOMDIR itself is not offered as a study."""
    from PySide6.QtCore import QMimeData, QPointF, QUrl
    from PySide6.QtGui import QDragEnterEvent, QDropEvent

    from dicom_factory import patient_cd

    cd = tmp_path / "CD"
    cd.mkdir()
    patient_cd(cd)
    lost = cd / "PT000001/ST000000/SE000000/IM000001"
    lost.unlink()
    window = _window(qtbot, store)
    data = QMimeData()
    data.setUrls([QUrl.fromLocalFile(str(cd))])
    at, how = QPointF(200, 200), (Qt.DropAction.CopyAction, data, Qt.MouseButton.LeftButton,
                                  Qt.KeyboardModifier.NoModifier)
    enter = QDragEnterEvent(at.toPoint(), *how)
    assert QApplication.sendEvent(window, enter) and enter.isAccepted()
    assert QApplication.sendEvent(window, QDropEvent(at, *how))
    qtbot.waitUntil(lambda: window.refusal_notice is not None, timeout=60_000)
    listed = sorted(window.study_list.paths)
    assert listed == sorted(str(cd / p) for p in ("PT000000/ST000000/SE000000/IM000000",
                                                  "PT000000/ST000000/SE000000/IM000001",
                                                  "PT000001/ST000000/SE000000/IM000000"))
    names = {window.studies.get(path).radiograph.info.patient_name for path in listed}
    assert names == {"Patient1^Test", "Patient2^Test"}
    text = window.refusal_notice.text()
    assert "1 of 4 files could not be opened" in text and "<b>IM000001</b>: listed in the DICOMDIR but not on the " \
        "media (Patient2, Test (CD-0002), 20260115 Chest PA, CR #1)" in text
    # the tree a reader knows from other viewers: patients, their studies, each study's series, its images
    tree = window.study_list
    patients = [tree.topLevelItem(i) for i in range(tree.topLevelItemCount())]
    assert sorted(p.text(0) for p in patients) == ["Patient1, Test (CD-0001)", "Patient2, Test (CD-0002)"]
    assert all(p.child(0).text(0) == "2026-01-15 · Chest PA" and p.child(0).child(0).text(0) == "CR #1 PA"
               for p in patients)
    assert sorted(p.child(0).child(0).childCount() for p in patients) == [1, 2]
    assert tree.currentItem().data(0, Qt.ItemDataRole.UserRole) == window.current  # the image shown is marked
    tree.setCurrentItem(next(p for p in patients if p.text(0).startswith("Patient2")))  # a patient: its image
    assert window.current == str(cd / "PT000001/ST000000/SE000000/IM000000")


def test_a_cd_with_a_damaged_index_opens_what_the_media_holds_without_blocking(qtbot, store, tmp_path, monkeypatch):
    """The index is read off the UI thread (pydicom checks every listed file: slow on a real CD; here made
    slower on purpose); a damaged one is named in a notice and the images on the media open instead."""
    import pydicom

    import app.main_window as main_window

    from dicom_factory import patient_cd
    from test_main_window import Watchdog
    from test_media import _relink

    cd = tmp_path / "CD"
    cd.mkdir()
    index = patient_cd(cd)
    records = pydicom.dcmread(index).DirectoryRecordSequence
    _relink(index, len(records) - 1, records[0].seq_item_tell)  # the last record leads back to the first
    reading = main_window.files_to_open

    def slow_media(paths):
        time.sleep(1.0)
        return reading(paths)

    monkeypatch.setattr(main_window, "files_to_open", slow_media)
    window = _window(qtbot, store)
    with Watchdog() as watchdog:
        window.open_paths([str(cd)])
        qtbot.waitUntil(lambda: window.refusal_notice is not None, timeout=60_000)
    assert watchdog.longest_ms < 500, watchdog.longest_ms
    assert len(window.study_list.paths) == 4
    assert window.refusal_notice.windowTitle() == "Opened with a note"
    assert "damaged DICOMDIR: its record links loop: opened the files on the media instead" in \
        window.refusal_notice.text()
