"""The PACS panel: search a PACS node for radiograph studies, look into their series, retrieve a study into the
cache (with progress and cancel) and hand its images to the viewer. Every PACS call runs in a worker."""

from __future__ import annotations

import shutil
import threading
from datetime import date
from pathlib import Path

from PySide6.QtCore import QSignalBlocker, Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.workers import Worker, start
from inference.models.weights import data_dir
from pacs.query import RetrieveCancelled, Retrieved, StudyMatch, StudyQuery
from pacs.remote import PacsNode, find_series, find_studies, get_study
from viewer.names import readable_date

COLUMNS = ("Patient", "Patient ID", "Date", "Description", "Accession", "Modalities", "Images")
WIDEST_COLUMN = 240  # px: a long description does not push the rest out of the panel (its tooltip has it whole)
UID_ROLE = Qt.ItemDataRole.UserRole


def cache_folder() -> Path:
    """Where retrieved studies are kept: in the user's data folder, never beside the program."""
    return data_dir() / "pacs-cache"


def _day(text: str, what: str) -> date | None:
    text = text.strip()
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{what} {text!r}: expected a date as YYYY-MM-DD") from None


class PacsPanel(QWidget):
    retrieved = Signal(list, bool)        # the retrieved files, whether to analyse them
    progressed = Signal(int, object)      # images received, how many are coming (None: unknown) — from a worker

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.nodes: list[PacsNode] = []
        self.ae_title = "MEDEDGE"
        self.move_port = 0  # DIMSE retrieves by C-MOVE to this port; 0: by C-GET
        self._workers: set[Worker] = set()
        self._cancel: threading.Event | None = None

        self.node = QComboBox()
        self.patient_name = QLineEdit(placeholderText="e.g. Rossi* (wildcards * and ?)")
        self.patient_id = QLineEdit()
        self.accession = QLineEdit()
        self.date_from = QLineEdit(placeholderText="YYYY-MM-DD")
        self.date_to = QLineEdit(placeholderText="YYYY-MM-DD")
        self.modalities = QLineEdit("CR,DX")
        form = QFormLayout()
        form.addRow("PACS", self.node)
        form.addRow("Patient name", self.patient_name)
        form.addRow("Patient ID", self.patient_id)
        form.addRow("Accession", self.accession)
        dates = QHBoxLayout()
        dates.addWidget(self.date_from)
        dates.addWidget(QLabel("to"))
        dates.addWidget(self.date_to)
        form.addRow("Study date", dates)
        form.addRow("Modalities", self.modalities)
        for edit in (self.patient_name, self.patient_id, self.accession, self.date_from, self.date_to, self.modalities):
            edit.returnPressed.connect(self.search)
        self.node.currentIndexChanged.connect(self._node_changed)
        self._searched: PacsNode | None = None  # the node the listed studies came from: retrieves go there
        self._searches = 0  # each search numbered: only the latest one's answer is listed

        self.search_button = QPushButton("Search")
        self.search_button.clicked.connect(self.search)
        self.results = QTreeWidget()
        self.results.setHeaderLabels(COLUMNS)
        self.results.setRootIsDecorated(True)
        self.results.itemExpanded.connect(self._expanded)
        self.results.itemDoubleClicked.connect(lambda item, column: self.retrieve())
        self.retrieve_button = QPushButton("Retrieve")
        self.retrieve_button.clicked.connect(self.retrieve)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.analyse = QCheckBox("Analyse on retrieve")
        self.clear_button = QPushButton("Clear cache")
        self.clear_button.setToolTip(f"delete the studies retrieved so far ({cache_folder()})")
        self.clear_button.clicked.connect(self.clear_cache)
        self.progress = QProgressBar()
        policy = self.progress.sizePolicy()
        policy.setRetainSizeWhenHidden(True)  # the buttons above stay where they are when a retrieve starts
        self.progress.setSizePolicy(policy)
        self.progress.setVisible(False)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        # room for two lines: the buttons above do not move when a one-line status becomes a two-line one
        self.status.setMinimumHeight(2 * self.status.fontMetrics().lineSpacing())
        buttons = QHBoxLayout()
        for button in (self.retrieve_button, self.cancel_button, self.clear_button):
            buttons.addWidget(button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.search_button)
        layout.addWidget(self.results, 1)
        layout.addLayout(buttons)
        layout.addWidget(self.analyse)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        self.progressed.connect(self._progressed)
        self.set_nodes([], self.ae_title)

    # ------------------------------------------------------------ settings

    def set_nodes(self, nodes: list[PacsNode], ae_title: str, move_port: int = 0) -> None:
        chosen = self.chosen_node()
        self.nodes, self.ae_title, self.move_port = list(nodes), ae_title, move_port
        with QSignalBlocker(self.node):  # one change, below, once the list is whole
            self.node.clear()
            for node in self.nodes:
                self.node.addItem(str(node))
            if chosen in self.nodes:  # Settings' OK keeps the node in use …
                self.node.setCurrentIndex(self.nodes.index(chosen))
                if self._searched == chosen:  # … and its list, now reached with the TLS files just set
                    self._searched = self.nodes[self.nodes.index(chosen)]
        usable = bool(self.nodes)
        self.search_button.setEnabled(usable)
        self.retrieve_button.setEnabled(usable and self._cancel is None)
        self._node_changed()
        self.status.setText("" if usable else "No PACS node set: add one in Settings (PACS nodes).")

    def _node_changed(self) -> None:
        """Another node chosen (or the list changed): the studies listed were another node's, so they go."""
        if self._searched is not None and self._searched != self.chosen_node():
            self._clear_results()

    def _clear_results(self) -> None:
        self.results.clear()
        self._searched = None

    def chosen_node(self) -> PacsNode | None:
        index = self.node.currentIndex()
        return self.nodes[index] if 0 <= index < len(self.nodes) else None

    def query(self) -> StudyQuery:
        """The filters as a query; ValueError saying which one is wrong."""
        modalities = tuple(m.strip().upper() for m in self.modalities.text().split(",") if m.strip())
        return StudyQuery(self.patient_name.text().strip(), self.patient_id.text().strip(),
                          self.accession.text().strip(), _day(self.date_from.text(), "from date"),
                          _day(self.date_to.text(), "to date"), modalities)

    # ------------------------------------------------------------ search

    def _run(self, function, *args, on_result, on_error) -> Worker:
        worker = Worker(function, *args)
        worker.signals.returned.connect(on_result)
        worker.signals.errored.connect(on_error)
        return start(worker, keep=self._workers)

    def search(self) -> Worker | None:
        node = self.chosen_node()
        if node is None:
            return None
        try:
            query = self.query()
        except ValueError as exc:
            self._clear_results()  # what is listed would not be what the filters now say
            self.status.setText(f"Not searched: {exc}")
            return None
        self.search_button.setEnabled(False)
        self.status.setText(f"Searching {node}…")
        self._searches += 1
        number = self._searches
        return self._run(find_studies, node, query, self.ae_title,
                         on_result=lambda studies: self._found(number, node, studies),
                         on_error=lambda exc: self._search_failed(number, exc))

    def _latest(self, number: int, node: PacsNode | None = None) -> bool:
        """The answer is the latest search's, of the node still chosen (another search, or another node chosen,
        since: it is not listed)."""
        if number != self._searches:
            return False
        self.search_button.setEnabled(True)
        if node is not None and node != self.chosen_node():
            self.status.setText("")  # ("Searching <the other node>…")
            return False
        return True

    def _found(self, number: int, node: PacsNode, studies: list[StudyMatch]) -> None:
        if not self._latest(number, node):
            return
        self.results.clear()
        self._searched = node
        for study in studies:
            item = _row([study.patient_name, study.patient_id, readable_date(study.study_date), study.description,
                         study.accession_number, ", ".join(study.modalities),
                         "" if study.images is None else str(study.images)])
            item.setData(0, UID_ROLE, study.study_uid)
            item.setChildIndicatorPolicy(QTreeWidgetItem.ChildIndicatorPolicy.ShowIndicator)
            self.results.addTopLevelItem(item)
        self._fit_columns()
        if studies:
            self.results.setCurrentItem(self.results.topLevelItem(0))
        self.status.setText(f"{len(studies)} stud{'y' if len(studies) == 1 else 'ies'} found")

    def _fit_columns(self) -> None:
        """Each column as wide as its longest text (up to WIDEST_COLUMN): names and descriptions readable, not cut
        to a few letters by equal default widths; the list scrolls sideways when the panel is narrower."""
        for column in range(len(COLUMNS)):
            self.results.resizeColumnToContents(column)
            self.results.setColumnWidth(column, min(self.results.columnWidth(column), WIDEST_COLUMN))

    def _search_failed(self, number: int, exc: BaseException) -> None:
        if not self._latest(number):
            return
        self._clear_results()
        self.status.setText(f"Search failed: {exc}")

    def _expanded(self, item: QTreeWidgetItem) -> None:
        """A study opened in the list: its series, asked once (of the node it was found on)."""
        node = self._searched
        if item.parent() is not None or item.childCount() or node is None:
            return
        placeholder = QTreeWidgetItem(["series…"])
        item.addChild(placeholder)

        def listed(series) -> None:
            item.removeChild(placeholder)
            for one in series:
                item.addChild(_row([f"Series {one.number} · {one.modality}", "", "", one.description, "", one.modality,
                                    "" if one.images is None else str(one.images)]))
            self._fit_columns()

        self._run(find_series, node, item.data(0, UID_ROLE), self.ae_title, on_result=listed,
                  on_error=lambda exc: placeholder.setText(0, f"series not listed: {exc}"))

    # ------------------------------------------------------------ retrieve

    def retrieve(self) -> Worker | None:
        node, item = self._searched, self.results.currentItem()
        while item is not None and item.parent() is not None:
            item = item.parent()  # a series row retrieves its study
        if node is None or item is None:
            self.status.setText("Choose a study to retrieve")
            return None
        if self._cancel is not None:
            return None  # one retrieve at a time
        self._cancel = threading.Event()
        self.retrieve_button.setEnabled(False)
        self.clear_button.setEnabled(False)  # not while files are being written into it
        self.cancel_button.setEnabled(True)
        self.progress.setRange(0, 0)
        self.progress.setVisible(True)
        name = item.text(0) or item.text(1) or "study"
        self.status.setText(f"Retrieving {name} from {node}…")
        analyse = self.analyse.isChecked()
        return self._run(get_study, node, item.data(0, UID_ROLE), cache_folder(), self.ae_title, self._cancel,
                         lambda done, total: self.progressed.emit(done, total), self.move_port,
                         on_result=lambda retrieved: self._retrieved(retrieved, analyse),
                         on_error=self._retrieve_failed)

    def cancel(self) -> None:
        if self._cancel is not None:
            self._cancel.set()
            self.status.setText("Cancelling the retrieve…")

    def _progressed(self, done: int, total) -> None:
        if total:
            self.progress.setRange(0, total)
            self.progress.setValue(done)
            self.progress.setFormat("%v/%m")

    def _ended(self) -> None:
        self._cancel = None
        self.retrieve_button.setEnabled(bool(self.nodes))
        self.clear_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.progress.setVisible(False)

    def _retrieved(self, retrieved: Retrieved, analyse: bool) -> None:
        self._ended()
        refused = f"; {len(retrieved.refused)} not kept: {retrieved.refused[0]}" if retrieved.refused else ""
        skipped = (f"; not retrieved: {', '.join(retrieved.skipped)} (the models read CR and DX radiographs)"
                   if retrieved.skipped else "")
        self.status.setText(f"Retrieved {len(retrieved.files)} image(s){refused}{skipped}")
        if retrieved.files:
            self.retrieved.emit([str(path) for path in retrieved.files], analyse)

    def _retrieve_failed(self, exc: BaseException) -> None:
        self._ended()
        if isinstance(exc, RetrieveCancelled):  # what came is opened, not analysed
            files = exc.retrieved.files
            self.status.setText(f"Retrieve cancelled; {len(files)} image(s) received" + (", opened" if files else ""))
            if files:
                self.retrieved.emit([str(path) for path in files], False)
        else:
            self.status.setText(f"Retrieve failed: {exc}")

    def clear_cache(self) -> Worker | None:
        """Every study retrieved so far deleted, once the user agrees (those open stay on screen, in memory)."""
        folder = cache_folder()
        asked = QMessageBox.question(self, "Clear cache", f"Delete every study retrieved from the PACS into {folder}? "
                                     "Studies open from it stay on screen until closed; their files go.")
        if asked != QMessageBox.StandardButton.Yes:
            return None
        self.status.setText("Clearing the cache…")
        return self._run(shutil.rmtree, folder, True, on_result=lambda _: self.status.setText(
            f"Cache cleared ({folder})"), on_error=lambda exc: self.status.setText(f"Cache not cleared: {exc}"))


def _row(texts: list[str]) -> QTreeWidgetItem:
    """A row of the list, each cell's whole text also its tooltip (a cell may be cut short)."""
    item = QTreeWidgetItem(texts)
    for column, text in enumerate(texts):
        if text:
            item.setToolTip(column, text)
    return item
