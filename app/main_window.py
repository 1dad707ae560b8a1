"""The main window: study list, canvas, findings, tag browser, status bar. Wires the loader and the analysis
service into the study model (app/studies.py), and the widgets to follow it; holds no pixel or model logic."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from html import escape
from pathlib import Path

from PySide6.QtCore import QSettings, Qt, QTimer
from PySide6.QtGui import QAction, QColor, QKeySequence, QPainter, QPixmap
from PySide6.QtWidgets import (
    QApplication,
    QDockWidget,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QScrollArea,
    QSlider,
    QToolBar,
    QWidget,
)

from app.analysis import AnalysisService, EdgeCheck, check_edges
from app.findings_panel import DEMO_BANNER, DEMO_COLOUR, FindingsPanel, timing_text
from app.pacs_panel import PacsPanel
from app.settings import AppSettings, load_settings, save_settings, settings_store
from app.studies import Batch, Study, StudyModel, result_status
from app.theme import apply_theme
from app.workers import Worker, start
from inference.analysis.analyzer import NotAChestRadiograph, check_in_scope
from inference.models.detector import DetectorConfig
from inference.models.findings import Findings
from inference.models.weights import data_dir
from viewer.corner_text import display_lines
from viewer.errors import RadiographError
from viewer.loader import load_radiograph
from viewer.media import OpenList, files_to_open
from viewer.names import readable_person_name
from viewer.radiograph import Radiograph, Window
from viewer.widgets.canvas import PRESETS, RadiographCanvas
from viewer.widgets.study_list import StudyList, thumbnail_pixels
from viewer.widgets.tag_browser import TagBrowser

# every file first: DICOM files from modalities and patient CDs often have no extension (IM000001), and the
# radiographs' filter hid them
FILE_FILTER = "All files (*);;Radiographs by extension (*.dcm *.dicom *.png *.jpg *.jpeg *.tif *.tiff)"
SHORTCUTS = [  # (action name, key) — listed in Help → Keyboard shortcuts
    ("Open files", "Ctrl+O"), ("Open folder", "Ctrl+Shift+O"), ("Close study", "Ctrl+W"),
    ("Next image", "PgDown"), ("Previous image", "PgUp"),
    ("Export view as PNG", "Ctrl+E"), ("Copy view", "Ctrl+C"),
    ("Analyze", "F5"), ("Analyze all", "Shift+F5"), ("Cancel analysis", "Esc"), ("Fit to window", "F"),
    ("1:1 pixels", "1"),
    ("Invert", "I"), ("Rotate right", "R"), ("Rotate left", "Shift+R"), ("Flip horizontally", "H"),
    ("Flip vertically", "V"), ("Distance tool", "M"), ("Remove distance line", "Delete"), ("Cardiothoracic ratio", "C"),
    ("Show image text", "T"),
    ("Show boxes", "B"), ("Settings", "Ctrl+,"),
    ("Preset: DICOM default", "0"), ("Preset: Lung", "2"), ("Preset: Bone", "3"), ("Preset: Soft tissue", "4"),
    ("Preset: Full range", "5"), ("Next window of the file", "W"), ("Quit", "Ctrl+Q"),
]
_KEYS = dict(SHORTCUTS)
DEFAULT_SIZE = (1440, 900)
STUDIES_WIDTH, FINDINGS_WIDTH = 240, 360  # starting dock widths (px): both readable on a 1366 px screen
LAYOUT_KEYS = ("window/geometry", "window/state")  # beside the settings, in the same QSettings
DISPLAY_VARIABLES = ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")  # any one: Qt has a screen to use
EXIT_NOT_STARTED = 2  # as argparse exits on a command line it refuses


def load_for_list(path: str):
    """(Radiograph, thumbnail grey pixels): what a study list row needs, made in the worker."""
    radiograph = load_radiograph(path)
    return radiograph, thumbnail_pixels(radiograph)


@dataclass
class _OpenBatch:
    """Files asked for together (the command line, a drop, Open files, Open folder) and how their loading went.
    They load at the same time; the first in the order given that opens is shown."""

    paths: list[str] | None = None  # the files, once the paths given are read (a folder's files, a CD's index)
    notes: list[str] = field(default_factory=list)  # e.g. a damaged CD index: its media's files opened instead
    opened: dict[int, str | None] = field(default_factory=dict)  # position in `paths` → the study's path, or None
    shown: bool = False
    refused: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    then: Callable[[list[str]], None] | None = None  # called once with the studies opened, when all are done
    asked: list[str] = field(default_factory=list)  # as given (a folder, a CD, files): what Open recent lists

    @property
    def done(self) -> bool:
        return self.paths is not None and len(self.opened) == len(self.paths)

    def to_show(self) -> str | None:
        """The study to show now: the first opened one with every file before it finished, once."""
        if self.shown or self.paths is None:
            return None
        for index in range(len(self.paths)):
            if index not in self.opened:
                return None
            if self.opened[index] is not None:
                self.shown = True
                return self.opened[index]
        return None


class MainWindow(QMainWindow):
    def __init__(self, store: QSettings | None = None) -> None:
        """`store`: where settings persist (default: the user's QSettings; tests pass their own file)."""
        super().__init__()
        self.setWindowTitle("MedEdge Viewer")
        self.setAcceptDrops(True)
        self.store = store
        settings, settings_problem = load_settings(store)
        self.settings = settings
        self.studies = StudyModel(self)
        self._workers: set[Worker] = set()  # running loaders (their signals must stay alive)
        self.refusal_notice: QMessageBox | None = None  # the last "Not opened" notice of a batch
        self._heat_finding = ""  # the finding whose heat map was asked for last

        self.canvas = RadiographCanvas(self)
        self.setCentralWidget(self.canvas)
        self.banner = QLabel(DEMO_BANNER)
        self.banner.setStyleSheet(f"background:{DEMO_COLOUR};color:white;font-weight:bold;padding:4px;")
        self.banner.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.study_list = StudyList(self)
        self.findings_panel = FindingsPanel(self)
        self.findings_panel.thresholds = dict(settings.finding_thresholds)
        self.tag_browser = TagBrowser(self)
        self.pacs_panel = PacsPanel(self)
        self.pacs_panel.set_nodes(settings.pacs, settings.ae_title, settings.move_port)
        self.pacs_panel.retrieved.connect(self._open_retrieved)
        apply_theme(QApplication.instance(), settings.theme)
        studies = self._dock("Studies", self.study_list, Qt.DockWidgetArea.LeftDockWidgetArea)
        # scrolled on a small screen (at 1024 × 600 the last findings were painted over the status bar)
        self.findings_scroll = QScrollArea()
        self.findings_scroll.setWidget(self.findings_panel)
        self.findings_scroll.setWidgetResizable(True)
        self.findings_scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.findings_scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        findings = self._dock("Findings", self.findings_scroll, Qt.DockWidgetArea.RightDockWidgetArea)
        tags = self._dock("DICOM tags", self.tag_browser, Qt.DockWidgetArea.RightDockWidgetArea)
        pacs = self._dock("PACS", self.pacs_panel, Qt.DockWidgetArea.LeftDockWidgetArea)
        self.docks = (studies, pacs, findings, tags)
        self.tabifyDockWidget(findings, tags)  # the 14 findings get the column's height; tags a click away
        self.tabifyDockWidget(studies, pacs)  # the PACS search a tab beside the studies opened
        findings.raise_()
        studies.raise_()
        self.resizeDocks([studies, findings], [STUDIES_WIDTH, FINDINGS_WIDTH], Qt.Orientation.Horizontal)

        self.analysis = AnalysisService(settings, self)
        self.analysis.progress.connect(self._analysis_progress)
        self.analysis.background.connect(self._background_work)
        self.analysis.finished.connect(self._analysis_finished)
        self.analysis.failed.connect(self._analysis_failed)
        self.analysis.cancelled.connect(self._analysis_cancelled)
        # "Analyze all": after the handlers above (they set the single-study state, these step the batch)
        self.analysis.started.connect(self.studies.batch_study_began)
        self.analysis.finished.connect(
            lambda path, findings: self.studies.batch_study_ended(path, result_status(findings)))
        self.analysis.failed.connect(
            lambda path, reason: self.studies.batch_study_ended(path, failure=reason))
        self.analysis.series_ended.connect(self.studies.end_batch)

        self._build_status_bar()
        self._build_actions()
        self._build_toolbar()
        # the views follow the study model
        self.studies.added.connect(lambda study, thumb: self.study_list.add(study.radiograph, thumb))
        self.studies.removed.connect(self.study_list.remove)
        self.studies.status_changed.connect(self.study_list.set_status)
        self.studies.status_changed.connect(self._follow_status)
        self.studies.current_changed.connect(self._follow_current)
        self.studies.findings_changed.connect(self._follow_findings)
        self.studies.batch_changed.connect(self._follow_batch)
        self.studies.batch_ended.connect(self._batch_ended)
        self.study_list.studyChosen.connect(self.show_study)
        self.canvas.cursorMoved.connect(self.cursor_label.setText)
        self.canvas.displayChanged.connect(self._show_window)
        self.canvas.measured.connect(self.distance_label.setText)
        self.findings_panel.findingSelected.connect(self._show_heat_map)
        self.findings_panel.thresholdChanged.connect(self._threshold_changed)
        self._update_banner()
        self.edge_timer = QTimer(self, interval=30_000)
        self.edge_timer.timeout.connect(self.check_edge)
        self.edge_timer.start()
        self.check_edge()
        if settings_problem:
            self.statusBar().showMessage(settings_problem, 10_000)

    # ------------------------------------------------------------ layout

    def _dock(self, title: str, widget: QWidget, area) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(title)
        dock.setWidget(widget)
        self.addDockWidget(area, dock)
        return dock

    def _build_status_bar(self) -> None:
        self.cursor_label = QLabel("")
        self.window_label = QLabel("")  # the window in use, as a reader states it: width and level
        self.distance_label = QLabel("")  # the measurement last made or moved while it is on the image
        self.edge_label = QLabel("Edge: …")
        self.mode_label = QLabel("")
        for label in (self.distance_label, self.window_label, self.mode_label, self.edge_label):
            label.setContentsMargins(12, 0, 0, 0)  # apart from the one before
        self.background_label = QLabel("")  # work this workstation does for minutes beside the analyses
        self.background_label.setToolTip("Auto times each local runtime once on this machine (export, build, check "
                                         "against PyTorch), and a calibrated INT8 runtime builds and gates the stages "
                                         "before a new cut once; studies are analysed with PyTorch meanwhile.")
        self.background_label.setVisible(False)
        self.progress = QProgressBar()
        self.progress.setRange(0, 0)
        self.progress.setMaximumWidth(120)
        self.progress.setVisible(False)
        bar = self.statusBar()
        bar.addWidget(self.cursor_label, 1)
        bar.addPermanentWidget(self.background_label)
        bar.addPermanentWidget(self.progress)
        bar.addPermanentWidget(self.distance_label)
        bar.addPermanentWidget(self.window_label)
        bar.addPermanentWidget(self.mode_label)
        bar.addPermanentWidget(self.edge_label)

    def _action(self, name: str, slot, checkable: bool = False) -> QAction:
        action = QAction(name, self, checkable=checkable)
        if name in _KEYS:
            action.setShortcut(QKeySequence(_KEYS[name]))
        action.triggered.connect(slot)
        self.addAction(action)  # shortcuts work wherever the focus is
        return action

    def _image_action(self, name: str, slot) -> QAction:
        """An action whose key works over the image and in the Studies list only: elsewhere the same key belongs to
        the widget with the focus (PgDown pages a list, Ctrl+C copies a field's text)."""
        action = self._action(name, slot)
        self.removeAction(action)
        action.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        for widget in (self.canvas, self.study_list):
            widget.addAction(action)
        return action

    def _build_actions(self) -> None:
        menu = self.menuBar()
        file = menu.addMenu("&File")
        file.addAction(self._action("Open files", self.choose_files))
        file.addAction(self._action("Open folder", self.choose_folder))
        self.recent_menu = file.addMenu("Open recent")
        self._refresh_recent()
        file.addAction(self._action("Close study", self.close_current))
        file.addAction(self._action("Export view as PNG", self.choose_export))
        file.addAction(self._image_action("Copy view", self.copy_view))
        self.sr_action = self._action("Export DICOM SR…", self.choose_sr_export)
        file.addAction(self.sr_action)
        self.gsps_action = self._action("Save the reading as a presentation state (GSPS)…",
                                        self.choose_presentation_state_export)
        self.send_reading_action = self._action("Send the reading to PACS", self.send_reading)
        file.addAction(self.gsps_action)
        file.addAction(self.send_reading_action)
        self.send_action = self._action("Send results to PACS", self.send_results)
        file.addAction(self.send_action)
        file.aboutToShow.connect(self.update_sr_action)  # enabled only for a study with findings
        file.addSeparator()
        file.addAction(self._action("Settings", self.open_settings))
        file.addAction(self._action("Quit", self.close))

        view = menu.addMenu("&View")
        for name, step in (("Next image", 1), ("Previous image", -1)):
            view.addAction(self._image_action(name, lambda _=False, s=step: self.step_image(s)))
        view.addAction(self._action("Fit to window", self.canvas.fit))
        view.addAction(self._action("1:1 pixels", self.canvas.one_to_one))
        self.invert_action = self._action("Invert", lambda checked: self.canvas.set_invert(checked), checkable=True)
        view.addAction(self.invert_action)
        view.addAction(self._action("Rotate right", lambda: self.canvas.rotate(90)))
        view.addAction(self._action("Rotate left", lambda: self.canvas.rotate(-90)))
        view.addAction(self._action("Flip horizontally", lambda: self.canvas.flip(horizontal=True)))
        view.addAction(self._action("Flip vertically", lambda: self.canvas.flip(horizontal=False)))
        presets = view.addMenu("Window preset")
        for preset in PRESETS:
            presets.addAction(self._action(f"Preset: {preset}", lambda _=False, p=preset: self.canvas.apply_preset(p)))
        presets.addSeparator()
        presets.addAction(self._action("Next window of the file", self.next_file_window))
        self.file_windows_menu = presets.addMenu("The file's windows")  # filled for the study shown
        self.text_action = self._action("Show image text", lambda checked: self.canvas.set_text_visible(checked),
                                        checkable=True)
        self.text_action.setChecked(True)
        view.addAction(self.text_action)
        view.addAction(self._action("Distance tool", self.canvas.start_ruler))
        view.addAction(self._action("Remove distance line", self.canvas.remove_ruler))
        view.addAction(self._action("Cardiothoracic ratio", self.canvas.toggle_ratio))
        panels = view.addMenu("Panels")  # a closed panel comes back from here
        for dock in self.docks:
            panels.addAction(dock.toggleViewAction())

        ai = menu.addMenu("&AI")
        self.analyze_action = self._action("Analyze", self.analyze_current)
        self.analyze_all_action = self._action("Analyze all", lambda: self.analyze_all())
        self.cancel_action = self._action("Cancel analysis", self.analysis.cancel)
        self.boxes_action = self._action("Show boxes", lambda checked: self.canvas.set_boxes_visible(checked),
                                         checkable=True)
        self.boxes_action.setChecked(True)
        self.auto_action = QAction("Analyze on open", self, checkable=True)
        self.auto_action.setChecked(self.settings.auto_analyze)
        self.auto_action.toggled.connect(self._set_auto_analyze)
        for action in (self.analyze_action, self.analyze_all_action, self.cancel_action, self.boxes_action,
                       self.auto_action):
            ai.addAction(action)

        help_menu = menu.addMenu("&Help")
        help_menu.addAction(self._action("Keyboard shortcuts", self.show_shortcuts))

    def _build_toolbar(self) -> None:
        toolbar = QToolBar("Tools", self)
        toolbar.setObjectName("Tools")
        self.addToolBar(toolbar)
        for action in (self.analyze_action, self.analyze_all_action, self.cancel_action, self.boxes_action):
            toolbar.addAction(action)
        toolbar.addSeparator()
        toolbar.addWidget(QLabel(" Confidence "))
        self.confidence_slider = QSlider(Qt.Orientation.Horizontal)
        # from the detector's own threshold up: it returns no box below it, so a lower setting showed nothing more
        floor = round(DetectorConfig().confidence * 100)
        self.confidence_slider.setRange(floor, 99)
        self.confidence_slider.setToolTip(f"boxes shown at or above this score (the detector keeps none below "
                                          f"{floor / 100:.2f})")
        self.confidence_slider.setValue(round(self.settings.confidence * 100))
        self.confidence_slider.setMaximumWidth(160)
        self.confidence_label = QLabel(f"{self.confidence_slider.value() / 100:.2f}")  # (a lower setting: clamped)
        self.confidence_slider.valueChanged.connect(self._confidence_changed)
        toolbar.addWidget(self.confidence_slider)
        toolbar.addWidget(self.confidence_label)
        toolbar.addWidget(QLabel("  Heat map opacity "))
        self.opacity_slider = QSlider(Qt.Orientation.Horizontal)
        self.opacity_slider.setRange(0, 100)
        self.opacity_slider.setValue(45)
        self.opacity_slider.setMaximumWidth(120)
        self.opacity_slider.valueChanged.connect(lambda v: self.canvas.set_heat_opacity(v / 100))
        toolbar.addWidget(self.opacity_slider)
        holder = QWidget()
        row = QHBoxLayout(holder)
        row.setContentsMargins(8, 0, 0, 0)
        row.addWidget(self.banner)
        toolbar.addWidget(holder)

    # ------------------------------------------------------------ opening

    def _open_from(self) -> str:
        """Where the open dialogs start: the folder of the study opened last, else the home folder."""
        last = Path(self.settings.recent_files[0]).parent if self.settings.recent_files else None
        return str(last) if last is not None and last.is_dir() else str(Path.home())

    def _export_to(self) -> str:
        """Where the export dialogs start: the folder exported to last, else the home folder (not the study's own,
        which may be a CD or the PACS cache)."""
        folder = self.settings.export_folder
        return folder if folder and Path(folder).is_dir() else str(Path.home())

    def _exported_to(self, folder: Path) -> None:
        self.settings = replace(self.settings, export_folder=str(folder))

    def choose_files(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(self, "Open radiographs", self._open_from(), FILE_FILTER)
        self.open_paths(paths)

    def choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open folder", self._open_from())
        if folder:
            self.open_paths([folder])

    def open_paths(self, paths: list[str], then: Callable[[list[str]], None] | None = None,
                   recent: bool = True) -> _OpenBatch:
        """Everything happens in the background: the paths are read (a folder's files; a patient CD's index,
        which pydicom checks file by file), then the files load all at once; the first that opens is shown.
        When several were asked for and some could not be opened, one notice lists each with its reason."""
        batch = _OpenBatch(then=then, asked=[str(p) for p in paths] if recent else [])
        self.statusBar().showMessage("Reading " + ", ".join(Path(p).name or str(p) for p in paths[:3])
                                     + ("…" if len(paths) > 3 else ""))
        reading = Worker(files_to_open, list(paths))
        reading.signals.returned.connect(lambda contents: self._open_contents(contents, batch))
        reading.signals.errored.connect(lambda exc: self._open_contents(OpenList([], notes=[
            f"could not read {', '.join(map(str, paths))}: {getattr(exc, 'strerror', None) or exc}"]), batch))
        start(reading, keep=self._workers)
        return batch

    def open_path(self, path: str | Path) -> Worker:
        return self._load(str(path), _OpenBatch([str(path)], asked=[str(path)]), 0)

    def _open_contents(self, contents: OpenList, batch: _OpenBatch) -> None:
        batch.paths, batch.notes = contents.files, contents.notes
        if not contents.files:
            self.statusBar().showMessage("; ".join(contents.notes) or "No files to open there")
        for index, path in enumerate(contents.files):
            if path in self.studies:  # open already: shown as it is (read again, it lost its analysis)
                self._batch_done(batch, index, path)
            elif (absence := contents.absence(path)) is not None:  # a CD's index lists it; the media lacks it
                self._load_failed(path, RadiographError(absence), batch, index)
            else:
                self._load(path, batch, index)

    def _load(self, path: str, batch: _OpenBatch, index: int) -> Worker:
        self.statusBar().showMessage(f"Loading {Path(path).name}…")
        worker = Worker(load_for_list, path)  # loading and the thumbnail both stay off the UI thread
        worker.signals.returned.connect(lambda loaded: self._loaded(*loaded, batch, index))
        worker.signals.errored.connect(lambda exc: self._load_failed(path, exc, batch, index))
        return start(worker, keep=self._workers)

    @property
    def current(self) -> str | None:
        """The path of the study shown."""
        return self.studies.current

    def _loaded(self, radiograph: Radiograph, thumb, batch: _OpenBatch, index: int) -> None:
        self.studies.add(radiograph, thumb)
        try:
            check_in_scope(radiograph)
        except NotAChestRadiograph as exc:
            self.studies.set_out_of_scope(radiograph.path, exc.reason)
        self.statusBar().showMessage(f"Opened {Path(radiograph.path).name}", 3000)
        if self.auto_action.isChecked():
            self.analyze(radiograph)
        self._batch_done(batch, index, radiograph.path)

    def _load_failed(self, path: str, exc: BaseException, batch: _OpenBatch, index: int) -> None:
        reason = exc.reason if isinstance(exc, RadiographError) else f"unexpected error: {exc}"
        batch.refused.append((path, reason))
        self.statusBar().showMessage(f"{Path(path).name}: {reason}")
        self._batch_done(batch, index, None)

    def _batch_done(self, batch: _OpenBatch, index: int, study: str | None) -> None:
        batch.opened[index] = study
        if batch.done and batch.asked:  # what was asked for, as asked (a folder stays a folder), if it opened
            opened = [Path(path) for path in batch.opened.values() if path is not None]  # (as read: no I/O here)
            for asked in reversed(batch.asked):
                where = Path(asked).parent if Path(asked).name.upper() == "DICOMDIR" else Path(asked)
                if any(path == where or path.is_relative_to(where) for path in opened):
                    self.settings = self.settings.with_recent(asked)
            self._refresh_recent()
        if (shown := batch.to_show()) is not None and shown in self.studies:  # (not closed meanwhile)
            self.show_study(shown)
        if batch.done and batch.then is not None:
            then, batch.then = batch.then, None
            then([path for _, path in sorted(batch.opened.items()) if path is not None and path in self.studies])
        size = len(batch.paths)
        if not batch.done or not (batch.notes or batch.refused and size > 1):
            return
        if batch.refused:
            self.statusBar().showMessage(f"Opened {size - len(batch.refused)} of {size}; "
                                         f"{len(batch.refused)} not opened")
        notes = "".join(f"<p>{escape(note)}</p>" for note in batch.notes)
        lines = "".join(f"<li><b>{escape(Path(path).name)}</b>: {escape(reason)}</li>" for path, reason in batch.refused)
        refused = f"{len(batch.refused)} of {size} files could not be opened:<ul>{lines}</ul>" if lines else ""
        notice = QMessageBox(QMessageBox.Icon.Warning, "Not opened" if lines else "Opened with a note",
                             notes + refused, QMessageBox.StandardButton.Ok, self)
        notice.setDetailedText("\n".join([*batch.notes, *(f"{path}: {reason}" for path, reason in batch.refused)]))
        notice.setModal(False)  # it reports; it does not stop the reading
        notice.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        notice.show()
        self.refusal_notice = notice

    def show_study(self, path: str) -> None:
        self.studies.show(path)

    def _follow_current(self, study: Study | None) -> None:
        """The study shown changed: the list marks it, the canvas, tags and findings show it."""
        if study is None:
            self.canvas.show_nothing()
            self._show_window()
            self.tag_browser.clear()
            self.findings_panel.show_findings(None)
            self._show_result_summary(None)
            self.setWindowTitle("MedEdge Viewer")
            return
        radiograph = study.radiograph
        self.study_list.mark_shown(study.path)
        self.canvas.show_radiograph(radiograph)
        self._list_file_windows(radiograph)
        self.invert_action.setChecked(False)
        self.tag_browser.show_header(radiograph.header)
        self.findings_panel.show_findings(study.findings, study.failure)
        self._show_result_summary(study.findings)
        if study.findings is not None:
            self._show_overlays(study.findings)
        info = radiograph.info
        self.setWindowTitle(" · ".join(p for p in ("MedEdge Viewer", readable_person_name(info.patient_name),
                                                   info.modality, Path(study.path).name) if p))

    def _follow_findings(self, study: Study) -> None:
        if study.path == self.current and study.findings is not None:
            self.findings_panel.show_findings(study.findings)
            self._show_result_summary(study.findings)
            self._show_overlays(study.findings)

    def _follow_status(self, path: str, status: str) -> None:
        """The findings panel of the study on screen says why it has none when its analysis failed."""
        study = self.studies.get(path)
        if path == self.current and study is not None and study.findings is None:
            self.findings_panel.show_findings(None, study.failure)

    def _show_window(self, _state=None) -> None:
        window = self.canvas.current_window()
        self.window_label.setText("" if window is None else display_lines(window, None)[0])

    def _show_result_summary(self, findings: Findings | None) -> None:
        """The status bar's mode and timing are those of the study on screen (none before it is analysed)."""
        self.mode_label.setText("" if findings is None else f"{findings.mode.value} · {timing_text(findings.timing_ms)}")

    def step_image(self, step: int) -> None:
        """The next (or previous) image in the Studies list's order, from the one on screen; none past either end."""
        order = self.study_list.in_order_shown()
        if self.current in order and 0 <= (at := order.index(self.current) + step) < len(order):
            self.show_study(order[at])

    def _file_windows(self, radiograph: Radiograph) -> list[tuple[str, Window | None]]:
        """The windows the file offers: its default (None: as the file says), then the others it names."""
        return [(radiograph.window_name or "default", None), *radiograph.other_windows]

    def _list_file_windows(self, radiograph: Radiograph) -> None:
        self.file_windows_menu.clear()
        for name, window in self._file_windows(radiograph):
            shown = radiograph.window if window is None else window
            action = self.file_windows_menu.addAction(f"{name} ({display_lines(shown, None)[0]})")
            action.triggered.connect(lambda _=False, w=window: self.canvas.set_window(w))
        self.file_windows_menu.setEnabled(len(radiograph.other_windows) > 0)

    def next_file_window(self) -> None:
        """W: the file's next window (NORMAL → HARDER → SOFTER → NORMAL …), as the modality offered them."""
        study = self.studies.current_study
        if study is None:
            return
        offered = self._file_windows(study.radiograph)
        windows = [w for _, w in offered]
        shown = self.canvas.state.window
        at = windows.index(shown) if shown in windows else -1
        name, window = offered[(at + 1) % len(offered)]
        self.canvas.set_window(window)
        self.statusBar().showMessage(f"The file's window: {name}", 3000)

    def close_current(self) -> None:
        if self.current is not None:
            self.close_study(self.current)

    def close_study(self, path: str) -> None:
        """Forget the study (image, findings, list row); the next one in the list is shown, else the one before."""
        if self.analysis.job is not None and self.analysis.job.path == path:
            self.analysis.cancel()
        paths = self.study_list.in_order_shown()
        at = paths.index(path) if path in paths else len(paths)
        neighbours = paths[at + 1:] + paths[:at][::-1]
        self.studies.remove(path, then=neighbours[0] if neighbours else None)
        self.canvas.forget_rulers(path)  # (put away as the next one came on screen)

    def dragEnterEvent(self, event) -> None:
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        self.open_paths([url.toLocalFile() for url in event.mimeData().urls() if url.isLocalFile()])

    def _refresh_recent(self) -> None:
        self.recent_menu.clear()
        for path in self.settings.recent_files:
            self.recent_menu.addAction(path, lambda p=path: self.open_paths([p]))  # a file, a folder or a CD

    # ------------------------------------------------------------ analysis

    def analyze_current(self) -> None:
        if self.current is None:
            self.statusBar().showMessage("Open a study first", 3000)
            return
        self.analyze(self.studies.get(self.current).radiograph)

    def analyze(self, radiograph: Radiograph):
        study = self.studies.get(radiograph.path)
        if study is not None and study.out_of_scope:
            self.statusBar().showMessage(f"Not analysed: {study.out_of_scope}", 10_000)
            return None
        self.studies.set_status(radiograph.path, "analysing…")
        self.progress.setVisible(True)
        return self.analysis.analyze(radiograph)

    def analyze_all(self, only: list[str] | None = None) -> None:
        """Every study in the list (or those of `only`) not analysed yet — all of them again once each one is — as
        one worklist (spread over every edge server and, with Auto, this workstation), off the UI thread; each row
        shows where its study stands."""
        paths = [p for p in self.study_list.paths if p in self.studies and (only is None or p in only)]
        if not paths:
            self.statusBar().showMessage("Open studies first", 3000)
            return
        paths = [p for p in paths if not self.studies.get(p).out_of_scope]  # their rows say why already
        if not paths:
            self.statusBar().showMessage("Nothing to analyse: no study open is a chest radiograph", 5000)
            return
        paths = [p for p in paths if self.studies.findings(p) is None] or paths
        if self.studies.batch is not None:
            return  # already analysing all
        self.studies.begin_batch(paths)
        self.analysis.analyze_all([self.studies.get(p).radiograph for p in paths])

    def _follow_batch(self, batch: Batch) -> None:
        """Analyze all's progress: studies ended of those asked (less any closed meanwhile)."""
        self.progress.setRange(0, batch.total)
        self.progress.setValue(batch.ended)
        self.progress.setFormat("%v/%m")
        self.progress.setTextVisible(True)
        self.progress.setVisible(True)

    def _batch_ended(self, batch: Batch, cancelled: bool) -> None:
        self.progress.setRange(0, 0)  # back to the busy indicator of single analyses
        self.progress.setTextVisible(False)
        self.progress.setVisible(self.analysis.busy)
        what = "stopped" if cancelled or batch.reason else "finished"
        self.statusBar().showMessage(f"Analyze all {what}: {batch.done} of {batch.total} analysed"
                                     + (f", {batch.failed} failed" if batch.failed else "")
                                     + (f" ({batch.reason})" if batch.reason else ""), 10_000)

    def _background_work(self, message: str) -> None:
        self.background_label.setText(message)
        self.background_label.setVisible(bool(message))

    def _analysis_progress(self, path: str, message: str) -> None:
        self.statusBar().showMessage(f"{Path(path).name}: {message}")

    def _analysis_finished(self, path: str, findings) -> None:
        self.progress.setVisible(self.analysis.busy)
        if not self.studies.set_findings(path, findings):
            return  # closed while it was analysed (the summary follows the study shown: _follow_findings)
        self.statusBar().showMessage(f"{Path(path).name}: analysed ({findings.mode.value})", 5000)

    def _analysis_failed(self, path: str, reason: str) -> None:
        self.progress.setVisible(self.analysis.busy)
        self.studies.set_failed(path, reason)  # as Analyze all's rows say it
        self.statusBar().showMessage(f"{Path(path).name}: analysis failed: {reason}")

    def _analysis_cancelled(self, path: str) -> None:
        self.progress.setVisible(self.analysis.busy)
        self.studies.set_status(path, "cancelled")
        self.statusBar().showMessage(f"{Path(path).name}: analysis cancelled", 5000)

    def _show_overlays(self, findings) -> None:
        self.canvas.show_detections(findings.detections)
        self.canvas.set_confidence(self.confidence_slider.value() / 100)
        self._update_banner(findings.demo_weights)

    def _show_heat_map(self, finding: str) -> None:
        self._heat_finding = finding
        findings = self.studies.findings(self.current)
        heat = findings.heat_map(finding) if finding and findings is not None else None
        self.canvas.show_heat_map(heat, self.opacity_slider.value() / 100)

    def _confidence_changed(self, value: int) -> None:
        self.confidence_label.setText(f"{value / 100:.2f}")
        self.canvas.set_confidence(value / 100)

    def _threshold_changed(self, finding: str, value: float) -> None:
        thresholds = dict(self.settings.finding_thresholds, **{finding: value})
        self.settings = replace(self.settings, finding_thresholds=thresholds)

    def _set_auto_analyze(self, enabled: bool) -> None:
        self.settings = replace(self.settings, auto_analyze=enabled)

    def _update_banner(self, demo: bool | None = None) -> None:
        if demo is None:
            demo = not (self.settings.detector_weights and self.settings.classifier_weights)
        self.banner.setVisible(demo)
        self.findings_panel.show_demo_banner(demo)

    # ------------------------------------------------------------ edge state, settings, export

    def check_edge(self) -> None:
        if self.settings.edge is None:
            self.edge_label.setText("Edge: local only")
            return
        worker = Worker(check_edges, self.settings)
        worker.signals.returned.connect(self._show_edges)
        worker.signals.errored.connect(lambda exc: self.edge_label.setText(f"Edge: not checked — {exc}"))
        start(worker, keep=self._workers)

    def _show_edges(self, checks: list[EdgeCheck]) -> None:
        """The status bar's edge label: every server counted (one down among several is named), each in the
        tooltip."""
        def one(check: EdgeCheck) -> str:  # (a problem names its server: "edge server HOST:PORT unreachable (…)")
            status = check.status
            return (f"{check.address}: connected (Triton {status.version}, {len(status.models)} models, "
                    f"{status.round_trip_ms:.0f} ms)" if status is not None else str(check.problem))

        up = [check for check in checks if check.status is not None]
        if len(checks) == 1:
            text = f"Edge: {one(checks[0])}"
        else:
            down = next((check for check in checks if check.status is None), None)
            text = f"Edges: {len(up)} of {len(checks)} connected" + (f"; {one(down)}" if down is not None else "")
        self.edge_label.setText(text)
        self.edge_label.setToolTip("\n".join(one(check) for check in checks))

    def open_settings(self) -> None:
        from app.settings_dialog import SettingsDialog

        dialog = SettingsDialog(self.settings, self)
        if dialog.exec():
            self.apply_settings(dialog.result_settings)

    def apply_settings(self, settings: AppSettings) -> None:
        if settings.theme is not self.settings.theme:
            apply_theme(QApplication.instance(), settings.theme)
        self.settings = settings
        self.pacs_panel.set_nodes(settings.pacs, settings.ae_title, settings.move_port)
        self.analysis.update_settings(settings)
        save_settings(settings, self.store)
        self._update_banner()
        self.check_edge()

    def choose_export(self) -> None:
        name = f"{Path(self.current).stem}-view.png" if self.current else "view.png"
        path, _ = QFileDialog.getSaveFileName(self, "Export view as PNG", str(Path(self._export_to()) / name),
                                              "PNG (*.png)")
        if path:
            self.export_view(path)

    def export_view(self, path: str) -> bool:
        """The canvas as shown as a PNG at `path`; the status bar says where, or that it could not be written."""
        if not self._view_png(path):
            self.statusBar().showMessage(f"View not exported: {path} could not be written")
            return False
        self._exported_to(Path(path).parent)
        self.statusBar().showMessage(f"View exported: {path}", 10_000)
        return True

    def _view_png(self, path: str) -> bool:
        return self.view_picture().save(path, "PNG")

    def view_picture(self) -> QPixmap:
        """The canvas as shown (image, boxes, heat map, measurements, the directions) without the patient's text.
        The panels do not go with it: a band above says what its overlays are — a result of the demo weights, the
        finding its heat map is of."""
        view = self.canvas.grab_without_identity()  # a view that leaves the viewer leaves no patient details behind
        findings = self.studies.findings(self.current)
        if findings is None:
            return view
        lines = [DEMO_BANNER] if findings.demo_weights else []
        if self.canvas.heat_item.isVisible() and self._heat_finding in findings.probabilities:
            lines.append(f"Heat map: {self._heat_finding} ({findings.probabilities[self._heat_finding]:.2f})")
        if not lines:
            return view
        band = (self.fontMetrics().height() + 4) * len(lines) + 8
        image = QPixmap(view.width(), view.height() + band)
        image.fill(QColor(DEMO_COLOUR if findings.demo_weights else "#202020"))
        painter = QPainter(image)
        try:
            painter.setPen(QColor("white"))
            painter.drawText(image.rect().adjusted(8, 4, -8, -view.height()), Qt.AlignmentFlag.AlignLeft,
                             "\n".join(lines))
            painter.drawPixmap(0, band, view)
        finally:
            painter.end()
        return image

    def copy_view(self) -> None:
        """Ctrl+C: the view as exported (no patient text), onto the clipboard for a report or a slide."""
        if self.current is None:
            self.statusBar().showMessage("Open a study first", 3000)
            return
        QApplication.clipboard().setPixmap(self.view_picture())
        self.statusBar().showMessage("View copied (without the patient's details)", 5000)

    def update_sr_action(self) -> None:
        """The File menu's DICOM actions enabled where they can work: results for an analysed study, a reading for
        a DICOM image (a PNG has no study to file it in)."""
        analysed = self.studies.findings(self.current) is not None
        self.sr_action.setEnabled(analysed)
        self.send_action.setEnabled(analysed and bool(self.settings.pacs_nodes))
        study = self.studies.current_study
        dicom = study is not None and study.radiograph.header is not None
        self.gsps_action.setEnabled(dicom)
        self.send_reading_action.setEnabled(dicom and bool(self.settings.pacs_nodes))

    def _open_retrieved(self, files: list[str], analyse: bool) -> None:
        """A study retrieved from the PACS: its images open like any files, and with "Analyse on retrieve" are
        analysed together once they have."""
        # (not in Open recent: the cache's files, one per image, go when it is cleared; the PACS panel finds them)
        self.open_paths(files, then=self.analyze_all if analyse else None, recent=False)

    def send_results(self) -> Worker | None:
        """The shown study's findings as a DICOM SR — with the annotated view as an image when the Settings ask —
        stored on the default PACS node (in a worker); the status bar says where it went or why not."""
        from app.results import write_and_send

        study = self.studies.current_study
        if study is None or study.findings is None:
            self.statusBar().showMessage("Send results to PACS: analyse the study first", 5000)
            return None
        if not self.settings.pacs:
            self.statusBar().showMessage("Send results to PACS: no PACS node set (Settings → PACS nodes)", 5000)
            return None
        node = self.settings.pacs[0]
        image_of, view = None, None
        if self.settings.send_annotated_image:  # the view as the reader sees it: their window, boxes, inversion
            from inference.reports.secondary_capture import View

            state = self.canvas.state
            image_of = study.radiograph
            # the boxes the reader sees: the slider's threshold, not the setting it started from
            view = View(self.confidence_slider.value() / 100, state.window, study.radiograph.inverted != state.invert)
        what = "the DICOM SR and the annotated image" if image_of is not None else "the DICOM SR"
        self.statusBar().showMessage(f"Sending {what} to {node}…")
        worker = Worker(write_and_send, study.findings, study.radiograph.header, data_dir() / "sent-sr", None, node,
                        self.settings.ae_title, None, image_of, view)

        def sent(outcome: dict) -> None:
            problem = outcome.get("sr_error") or outcome.get("send_error")
            if problem:
                self.statusBar().showMessage(f"Results not sent: {problem}")
            elif "image_error" in outcome:  # the SR went alone
                self.statusBar().showMessage(f"DICOM SR sent to {outcome['sent']}; {outcome['image_error']}")
            else:
                self.statusBar().showMessage(f"{what[0].upper()}{what[1:]} sent to {outcome['sent']}", 10_000)

        worker.signals.returned.connect(sent)
        worker.signals.errored.connect(lambda exc: self.statusBar().showMessage(f"Results not sent: {exc}"))
        return start(worker, keep=self._workers)

    def choose_sr_export(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Export DICOM SR into folder", self._export_to())
        if folder:
            self.export_sr(folder)

    def export_sr(self, folder: str) -> Path | None:
        """The current study's findings as a DICOM SR in `folder`; the status bar gives its path or why not."""
        from inference.reports.structured_report import StructuredReportError, write_sr  # highdicom: loaded when used

        study = self.studies.current_study
        findings = study.findings if study is not None else None
        if study is None or findings is None:
            self.statusBar().showMessage("DICOM SR: analyse the study first", 5000)
            return None
        try:
            path = write_sr(findings, study.radiograph, folder)
        except (StructuredReportError, OSError) as exc:
            self.statusBar().showMessage(f"DICOM SR not written: {exc}")
            return None
        self._exported_to(Path(folder))
        self.statusBar().showMessage(f"DICOM SR written: {path}")
        return path

    def _reading(self):
        """The study on screen as read here (a presentation state's `Reading`), or None with none shown."""
        from inference.reports.presentation_state import Measurement, Reading

        study, canvas = self.studies.current_study, self.canvas
        window = canvas.current_window()
        if study is None or window is None:
            return None
        state, radiograph = canvas.state, study.radiograph
        return Reading(window.center, window.width, radiograph.inverted != state.invert,
                       radiograph.voi_function.value, radiograph.voi_lut if state.window is None else None,
                       state.rotation, state.flip_horizontal, state.flip_vertical,
                       tuple(Measurement(start, end, text) for start, end, text in canvas.measurement_lines()))

    def send_reading(self) -> Worker | None:
        """The reading (window, orientation, measurements) as a presentation state stored on the default PACS node
        beside the study (in a worker); the status bar says where it went or why not."""
        from app.results import write_and_send_reading

        study, reading = self.studies.current_study, self._reading()
        if study is None or reading is None:
            self.statusBar().showMessage("Send the reading: open a study first", 5000)
            return None
        if not self.settings.pacs:
            self.statusBar().showMessage("Send the reading: no PACS node set (Settings → PACS nodes)", 5000)
            return None
        node = self.settings.pacs[0]
        self.statusBar().showMessage(f"Sending the reading to {node}…")
        worker = Worker(write_and_send_reading, reading, study.radiograph.header, data_dir() / "sent-readings", node,
                        self.settings.ae_title)

        def sent(outcome: dict) -> None:
            problem = outcome.get("gsps_error") or outcome.get("send_error")
            self.statusBar().showMessage(f"Reading not sent: {problem}" if problem else
                                         f"The reading (presentation state) sent to {outcome['sent']}", 10_000)

        worker.signals.returned.connect(sent)
        worker.signals.errored.connect(lambda exc: self.statusBar().showMessage(f"Reading not sent: {exc}"))
        return start(worker, keep=self._workers)

    def choose_presentation_state_export(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Save the reading (GSPS) into folder", self._export_to())
        if folder:
            self.export_presentation_state(folder)

    def export_presentation_state(self, folder: str) -> Path | None:
        """The image as read here — window, polarity, rotation and mirroring, measurements — as a DICOM Grayscale
        Softcopy Presentation State in `folder`; the status bar gives its path or why not."""
        from inference.reports.presentation_state import write_presentation_state
        from inference.reports.structured_report import StructuredReportError

        study, reading = self.studies.current_study, self._reading()
        if study is None or reading is None:
            self.statusBar().showMessage("Presentation state: open a study first", 5000)
            return None
        try:
            path = write_presentation_state(reading, study.radiograph.header, folder)
        except (StructuredReportError, OSError) as exc:
            self.statusBar().showMessage(f"Presentation state not written: {exc}", 10_000)
            return None
        self._exported_to(Path(folder))
        self.statusBar().showMessage(f"Presentation state (GSPS) written: {path}")
        return path

    def show_shortcuts(self) -> None:
        rows = "".join(f"<tr><td>{name}</td><td><b>{key}</b></td></tr>" for name, key in SHORTCUTS)
        QMessageBox.information(self, "Keyboard shortcuts",
                                f"<table>{rows}<tr><td>Window/level</td><td><b>right-drag</b></td></tr>"
                                "<tr><td>Zoom</td><td><b>wheel</b></td></tr><tr><td>Pan</td><td><b>drag</b></td>"
                                "</tr></table>")

    def restore_layout(self) -> None:
        """The window's size, place and docks as the user left them; the first time, a size that fits the
        screen (1440 × 900 at most: on a 1366 × 768 laptop the whole screen)."""
        store = settings_store(self.store)
        geometry, state = store.value(LAYOUT_KEYS[0]), store.value(LAYOUT_KEYS[1])
        if geometry is not None and self.restoreGeometry(geometry):
            if state is not None:
                self.restoreState(state)
            return
        screen = (self.screen() or QApplication.primaryScreen()).availableGeometry()
        self.resize(min(DEFAULT_SIZE[0], screen.width()), min(DEFAULT_SIZE[1], screen.height()))
        self.move(screen.topLeft())
        if screen.width() <= DEFAULT_SIZE[0] or screen.height() <= DEFAULT_SIZE[1]:
            self.setWindowState(Qt.WindowState.WindowMaximized)

    def closeEvent(self, event) -> None:
        self.analysis.cancel()
        self.analysis.close()
        save_settings(self.settings, self.store)
        store = settings_store(self.store)
        store.setValue(LAYOUT_KEYS[0], self.saveGeometry())
        store.setValue(LAYOUT_KEYS[1], self.saveState())
        super().closeEvent(event)


def choose_platform(environ=os.environ) -> None:
    """On a Wayland desktop with XWayland, Qt's xcb platform, as on X11 (native Wayland, also tested, only where no
    X server is offered; QT_QPA_PLATFORM set by the user always wins)."""
    if "QT_QPA_PLATFORM" not in environ and environ.get("WAYLAND_DISPLAY") and environ.get("DISPLAY"):
        environ["QT_QPA_PLATFORM"] = "xcb"


def why_the_viewer_cannot_start(paths: list[str], environ=os.environ, platform: str = sys.platform) -> str | None:
    """One line saying why the viewer would not start, checked before Qt: a mistyped command, or no display (where
    Qt would abort with a misleading hint to reinstall); None when it can start."""
    # only the first word, and only a bare word (no folder, no extension): a mistyped command is there; a missing
    # file, first or further on, is refused in the viewer, which opens the others (it refused to start)
    first = paths[0] if paths else ""
    if first and "/" not in first and os.sep not in first and not Path(first).suffix and not Path(first).exists():
        return f"mededge: {first} is neither a command nor a file or folder (mededge --help lists the commands)"
    if platform.startswith("linux") and not any(environ.get(key) for key in DISPLAY_VARIABLES):
        return ("mededge: no display to show the viewer on (neither DISPLAY nor WAYLAND_DISPLAY is set): start it "
                "from a desktop session, or use a command such as infer or inspect (mededge --help)")
    return None


def run_viewer(paths: list[str], screenshot: str | None = None) -> int:
    refusal = why_the_viewer_cannot_start(paths)
    if refusal is not None:
        print(refusal, file=sys.stderr)
        return EXIT_NOT_STARTED
    choose_platform()
    app = QApplication.instance() or QApplication(sys.argv[:1])
    window = MainWindow()
    if screenshot:
        window.resize(*DEFAULT_SIZE)
    else:
        window.restore_layout()
    window.show()
    if screenshot:
        from app.screenshot import take_screenshot

        return take_screenshot(app, window, paths, screenshot)
    if paths:
        window.open_paths(paths)
    return app.exec()
