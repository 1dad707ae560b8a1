"""Settings dialog: edge address(es), TLS, timeout, split, wire, device, weights, thresholds, PACS nodes, their TLS
files and DICOMweb sign-in (kept in the system keyring).

OK builds an `AppSettings`, which validates; a bad value is refused with its reason and the dialog
stays open. "Test connection" and the weights' SHA-256 run in workers: the dialog never freezes.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app.analysis import EdgeCheck, check_edges
from app.settings import AppSettings, SplitMode
from app.theme import Theme
from app.workers import Worker, start
from inference.config import Runtime, WireFormat
from inference.models.detector import DetectorConfig
from inference.models.weights import file_sha256
from pacs.nodes import PacsTls
from security.pem import check_pem_files


class SettingsDialog(QDialog):
    def __init__(self, settings: AppSettings, parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self.settings = settings
        self.result_settings: AppSettings | None = None
        self._workers: set[Worker] = set()
        self._sign_in_calls = 0  # keyring calls begun: only the latest one's outcome is shown
        form = QFormLayout()

        self.addresses = QPlainTextEdit("\n".join(settings.edge_addresses))
        self.addresses.setPlaceholderText("edge-host:8001 (one per line: requests are spread over them and fail "
                                          "over; Test connection checks the first)")
        self.addresses.setMaximumHeight(70)
        form.addRow("Edge servers", self.addresses)
        self.tls = QCheckBox("Use TLS")
        self.tls.setChecked(settings.tls)
        form.addRow("", self.tls)
        self.ca_file = QLineEdit(settings.ca_file)
        form.addRow("CA certificate", self._with_browse(self.ca_file, "PEM files (*.pem *.crt);;All files (*)"))
        self.client_certificate_file = QLineEdit(settings.client_certificate_file)
        self.client_certificate_file.setPlaceholderText("mutual TLS only: this workstation's certificate")
        form.addRow("Client certificate", self._with_browse(self.client_certificate_file,
                                                            "PEM files (*.pem *.crt);;All files (*)"))
        self.client_key_file = QLineEdit(settings.client_key_file)
        self.client_key_file.setPlaceholderText("mutual TLS only: its private key")
        form.addRow("Client key", self._with_browse(self.client_key_file, "PEM files (*.pem *.key);;All files (*)"))
        self.timeout = QDoubleSpinBox()
        self.timeout.setRange(0.1, 600)
        self.timeout.setSuffix(" s")
        self.timeout.setValue(settings.timeout_s)
        form.addRow("Request timeout", self.timeout)

        self.split = QComboBox()
        for mode, text in ((SplitMode.AUTO, "Auto"), (SplitMode.LOCAL, "Local only"), (SplitMode.EDGE, "Edge only"),
                           (SplitMode.MANUAL, "Manual cut per model")):
            self.split.addItem(text, mode)
        self.split.setCurrentIndex(self.split.findData(settings.split_mode))
        form.addRow("Split", self.split)
        self.detector_cut = QSpinBox()
        self.detector_cut.setRange(0, 64)
        self.detector_cut.setValue(settings.detector_cut)
        self.classifier_cut = QSpinBox()
        self.classifier_cut.setRange(0, 10)
        self.classifier_cut.setValue(settings.classifier_cut)
        cuts = QWidget()
        row = QHBoxLayout(cuts)
        row.setContentsMargins(0, 0, 0, 0)
        for label, spin in (("detector", self.detector_cut), ("classifier", self.classifier_cut)):
            row.addWidget(QLabel(label))
            row.addWidget(spin)
        form.addRow("Manual cuts", cuts)
        self.wire = QComboBox()
        self.wire.addItems([wire.value for wire in WireFormat])
        self.wire.setCurrentText(settings.wire.value)
        form.addRow("Wire precision", self.wire)
        self.device = QComboBox()
        self.device.addItem("CPU", "cpu")
        if torch.cuda.is_available():
            self.device.addItem("CUDA", "cuda")
        self.device.setCurrentIndex(max(self.device.findData(str(settings.device)), 0))
        form.addRow("Local device", self.device)
        self.runtime = QComboBox()
        for runtime, text in ((Runtime.AUTO, "Auto (the fastest that passes the fidelity gate, measured)"),
                              (Runtime.TORCH, "PyTorch"), (Runtime.TORCH_FP16, "PyTorch FP16 (for CUDA)"),
                              (Runtime.ONNXRUNTIME, "ONNX Runtime"),
                              (Runtime.ONNXRUNTIME_INT8_DYNAMIC, "ONNX Runtime INT8 (dynamic)"),
                              (Runtime.ONNXRUNTIME_INT8_STATIC,
                               "ONNX Runtime INT8 (static; run 'models quantize' first)"),
                              (Runtime.OPENVINO, "OpenVINO"),
                              (Runtime.OPENVINO_INT8,
                               "OpenVINO INT8 (run 'models quantize --runtime openvino-int8' first)"),
                              (Runtime.PRUNED, "Pruned copy, OpenVINO (run 'models prune' first)")):
            self.runtime.addItem(text, runtime.value)
        self.runtime.setCurrentIndex(max(self.runtime.findData(settings.runtime.value), 0))
        self.runtime.setToolTip("Auto measures each runtime once on this machine and keeps the fastest that "
                                "passes; ONNX Runtime and OpenVINO prepare their model once (about a minute) on "
                                "the first analysis after choosing them")
        form.addRow("Local runtime", self.runtime)

        self.detector_weights = QLineEdit(settings.detector_weights)
        self.detector_weights.setPlaceholderText("demo weights")
        self.detector_sha = QLabel("")
        form.addRow("Detector weights", self._with_browse(self.detector_weights, "PyTorch (*.pt *.pth);;All (*)"))
        form.addRow("", self.detector_sha)
        self.classifier_weights = QLineEdit(settings.classifier_weights)
        self.classifier_weights.setPlaceholderText("demo weights")
        self.classifier_sha = QLabel("")
        form.addRow("Classifier weights", self._with_browse(self.classifier_weights,
                                                            "PyTorch (*.pt *.pth *.tar);;All (*)"))
        form.addRow("", self.classifier_sha)
        for edit, label in ((self.detector_weights, self.detector_sha), (self.classifier_weights, self.classifier_sha)):
            edit.editingFinished.connect(lambda e=edit, lab=label: self._hash(e.text(), lab))
            self._hash(edit.text(), label)
        self.confidence = QDoubleSpinBox()
        self.confidence.setRange(DetectorConfig().confidence, 0.99)  # the detector keeps no box below its own
        self.confidence.setSingleStep(0.05)
        self.confidence.setValue(settings.confidence)
        form.addRow("Box confidence", self.confidence)
        self.theme = QComboBox()
        for theme, label in ((Theme.DARK, "Dark (reading room)"), (Theme.LIGHT, "Light")):
            self.theme.addItem(label, theme)
        self.theme.setCurrentIndex(self.theme.findData(settings.theme))
        form.addRow("Appearance", self.theme)
        self.pacs_nodes = QPlainTextEdit("\n".join(settings.pacs_nodes))
        self.pacs_nodes.setPlaceholderText("Main PACS = PACS@pacs.example.org:104 (a name if you like, then DIMSE "
                                           "AE title@host:port, tls:PACS@host:2762 for DICOM TLS, or a DICOMweb "
                                           "https://… URL); one per line, the first is the default")
        self.pacs_nodes.setMaximumHeight(60)
        form.addRow("PACS nodes", self.pacs_nodes)
        self.ae_title = QLineEdit(settings.ae_title)
        self.ae_title.setToolTip("the AE title the PACS knows this workstation by (up to 16 characters)")
        form.addRow("This workstation's AE title", self.ae_title)
        self.move_port = QSpinBox()
        self.move_port.setRange(0, 65535)
        self.move_port.setSpecialValueText("C-GET (no port)")
        self.move_port.setValue(settings.move_port)
        self.move_port.setToolTip("retrieve from DIMSE nodes by C-MOVE to this port (the PACS must know this AE title "
                                  "at this workstation's address and port); C-GET when none")
        form.addRow("Retrieve by C-MOVE to port", self.move_port)
        self.pacs_ca_file = QLineEdit(settings.pacs_ca_file)
        self.pacs_ca_file.setPlaceholderText("the system's CAs")
        form.addRow("PACS CA certificate", self._with_browse(self.pacs_ca_file, "PEM files (*.pem *.crt);;All files (*)"))
        self.pacs_certificate_file = QLineEdit(settings.pacs_certificate_file)
        self.pacs_certificate_file.setPlaceholderText("for DICOM TLS nodes that ask for one, and C-MOVE over TLS")
        form.addRow("This workstation's certificate", self._with_browse(self.pacs_certificate_file,
                                                                        "PEM files (*.pem *.crt);;All files (*)"))
        self.pacs_key_file = QLineEdit(settings.pacs_key_file)
        self.pacs_key_file.setPlaceholderText("its private key")
        form.addRow("Its key", self._with_browse(self.pacs_key_file, "PEM files (*.pem *.key);;All files (*)"))
        form.addRow("DICOMweb sign-in", self._sign_in_row())
        form.addRow("", self.sign_in_state)
        self.send_annotated_image = QCheckBox("Send the annotated view (a Secondary Capture image) with the SR")
        self.send_annotated_image.setChecked(settings.send_annotated_image)
        form.addRow("Send results to PACS", self.send_annotated_image)

        self.test_button = QPushButton("Test connection")
        self.test_button.clicked.connect(self.test_connection)
        self.test_result = QLabel("")
        self.test_result.setWordWrap(True)
        self.test_pacs_button = QPushButton("Test PACS nodes")
        self.test_pacs_button.clicked.connect(self.test_pacs)
        self.pacs_result = QLabel("")
        self.pacs_result.setWordWrap(True)
        # each test beside the fields it tests: the edge's under its timeout, the PACS's under the PACS fields
        below_edge = form.getWidgetPosition(self.timeout)[0] + 1
        form.insertRow(below_edge, "", self.test_button)
        form.insertRow(below_edge + 1, "", self.test_result)
        form.addRow("", self.test_pacs_button)
        form.addRow("", self.pacs_result)
        # a test's result is of the values it ran with: it goes when one of them changes
        for field in (self.addresses, self.ca_file, self.client_certificate_file, self.client_key_file):
            field.textChanged.connect(lambda *_: self.test_result.setText(""))
        self.tls.toggled.connect(lambda *_: self.test_result.setText(""))
        for field in (self.pacs_nodes, self.ae_title, self.pacs_ca_file, self.pacs_certificate_file,
                      self.pacs_key_file):
            field.textChanged.connect(lambda *_: self.pacs_result.setText(""))
        self.error = QLabel("")
        self.error.setStyleSheet("color:#b00020;")
        self.error.setWordWrap(True)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        # The fields scroll; the reason a value is refused and OK/Cancel stay in sight: on a 1366 × 768 screen
        # the whole form is taller than the screen.
        content = QWidget()
        fields = QVBoxLayout(content)
        fields.setContentsMargins(0, 0, 0, 0)
        fields.addLayout(form)
        scroll = QScrollArea()
        scroll.setWidget(content)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setMinimumWidth(content.sizeHint().width() + scroll.verticalScrollBar().sizeHint().width())
        layout = QVBoxLayout(self)
        layout.addWidget(scroll)
        layout.addWidget(self.error)
        layout.addWidget(buttons)
        # Tab, and the focus a test's button gives up while it runs, go to the field below it (the focus went to the
        # next button made, at the bottom, and the fields scrolled away from the result)
        QWidget.setTabOrder(self.timeout, self.test_button)
        QWidget.setTabOrder(self.test_button, self.split)
        room = self.screen().availableGeometry().height() * 9 // 10  # (a title bar and a panel take the rest)
        self.resize(self.sizeHint().width(), min(content.sizeHint().height() + buttons.sizeHint().height() + 48, room))

    def _sign_in_row(self) -> QWidget:
        """A DICOMweb node's sign-in, kept in the system's keyring (never in the settings file): a user and its
        password, or a bearer token alone. What is stored is never read back into the dialog."""
        self.sign_in_node = QComboBox()
        self.sign_in_user = QLineEdit()
        self.sign_in_user.setPlaceholderText("user")
        self.sign_in_user.setToolTip("HTTP basic auth's user; empty: the field beside holds a bearer token")
        self.sign_in_secret = QLineEdit()
        self.sign_in_secret.setEchoMode(QLineEdit.EchoMode.Password)
        self.sign_in_secret.setPlaceholderText("password or token")
        self.save_sign_in_button = QPushButton("Save in keyring")
        self.save_sign_in_button.setToolTip("empty user and password: forget the node's sign-in")
        self.save_sign_in_button.clicked.connect(self.save_sign_in)
        self.sign_in_state = QLabel("")
        self.sign_in_state.setWordWrap(True)
        holder = QWidget()
        row = QHBoxLayout(holder)
        row.setContentsMargins(0, 0, 0, 0)
        for widget in (self.sign_in_node, self.sign_in_user, self.sign_in_secret, self.save_sign_in_button):
            row.addWidget(widget)
        self.pacs_nodes.textChanged.connect(self._list_dicomweb_nodes)
        self.sign_in_node.currentIndexChanged.connect(self._show_sign_in)
        self._list_dicomweb_nodes()
        return holder

    def _list_dicomweb_nodes(self) -> None:
        from pacs.dicomweb import DicomWebNode
        from pacs.remote import parse_node

        urls = []
        for line in self.pacs_nodes.toPlainText().splitlines():
            try:
                node = parse_node(line, PacsTls()) if line.strip() else None
            except ValueError:
                continue  # OK names the line that is wrong
            if isinstance(node, DicomWebNode) and node.url not in urls:
                urls.append(node.url)
        for widget in (self.sign_in_node, self.sign_in_user, self.sign_in_secret, self.save_sign_in_button):
            widget.setEnabled(bool(urls))
        if not urls:
            self.sign_in_state.setText("no DICOMweb node in the list")
        if urls != [self.sign_in_node.itemData(i) for i in range(self.sign_in_node.count())]:
            self.sign_in_node.clear()
            for url in urls:
                self.sign_in_node.addItem(url, url)

    def _show_sign_in(self) -> Worker | None:
        """What the keyring holds for the chosen node (in a worker: a keyring may ask to be unlocked)."""
        from pacs.credentials import stored_sign_in

        url = self.sign_in_node.currentData()
        if not url:
            return None
        say = self._sign_in_says()
        say(f"{url}: reading the keyring…")

        def shown(stored) -> None:
            if url == self.sign_in_node.currentData():
                say(f"{url}: " + (f"sign-in stored in the keyring ({stored.kind})" if stored else "no sign-in stored"))

        return self._run(stored_sign_in, url, on_result=shown,
                         on_error=lambda exc: say(f"{url}: keyring unreadable: {exc}"))

    def _sign_in_says(self):
        """A setter of the sign-in line for one keyring call that stops once a later call began: a slow read
        must not overwrite what a save just said."""
        self._sign_in_calls += 1
        call = self._sign_in_calls

        def say(text: str) -> None:
            if call == self._sign_in_calls:
                self.sign_in_state.setText(text)
        return say

    def save_sign_in(self) -> Worker | None:
        """The typed sign-in into the keyring for the chosen node (empty: forgotten); the secret field is cleared."""
        from pacs.credentials import SignIn, store_sign_in

        url = self.sign_in_node.currentData()
        user, secret = self.sign_in_user.text().strip(), self.sign_in_secret.text()
        try:
            sign_in = SignIn(user, secret) if user else SignIn(token=secret.strip())
        except ValueError as exc:
            self.sign_in_state.setText(str(exc))
            return None
        if not url:
            return None
        self.sign_in_secret.clear()
        say = self._sign_in_says()
        say(f"{url}: saving in the keyring…")
        return self._run(store_sign_in, url, sign_in,
                         on_result=lambda _: say(f"{url}: sign-in saved in the keyring ({sign_in.kind})" if sign_in
                                                 else f"{url}: sign-in forgotten"),
                         on_error=lambda exc: say(f"{url}: {exc}"))

    def _with_browse(self, edit: QLineEdit, pattern: str) -> QWidget:
        holder = QWidget()
        row = QHBoxLayout(holder)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(edit)
        browse = QPushButton("…")
        browse.setMaximumWidth(30)

        def choose() -> None:
            path, _ = QFileDialog.getOpenFileName(self, "Choose file", edit.text(), pattern)
            if path:
                edit.setText(path)
                edit.editingFinished.emit()

        browse.clicked.connect(choose)
        row.addWidget(browse)
        return holder

    def _run(self, function, *args, on_result, on_error) -> Worker:
        worker = Worker(function, *args)
        worker.signals.returned.connect(on_result)
        worker.signals.errored.connect(on_error)
        return start(worker, keep=self._workers)

    def _hash(self, path: str, label: QLabel) -> None:
        if not path.strip():
            label.setText("demo weights (untrained)")
            return
        label.setText("SHA-256: computing…")
        self._run(file_sha256, path.strip(), on_result=lambda digest: label.setText(f"SHA-256: {digest}"),
                  on_error=lambda exc: label.setText(f"cannot read: {exc}"))

    def collect(self) -> AppSettings:
        """The dialog's values as settings; ValueError with the reason when one is bad."""
        addresses = tuple(line.strip() for line in self.addresses.toPlainText().splitlines() if line.strip())
        settings = replace(self.settings, edge_addresses=addresses, tls=self.tls.isChecked(),
                       ca_file=self.ca_file.text().strip(),
                       client_certificate_file=self.client_certificate_file.text().strip(),
                       client_key_file=self.client_key_file.text().strip(), timeout_s=self.timeout.value(),
                       split_mode=self.split.currentData(), detector_cut=self.detector_cut.value(),
                       classifier_cut=self.classifier_cut.value(), wire=self.wire.currentText(),
                       device=self.device.currentData(), runtime=self.runtime.currentData(),
                       detector_weights=self.detector_weights.text().strip(),
                       classifier_weights=self.classifier_weights.text().strip(), confidence=self.confidence.value(),
                       theme=self.theme.currentData(),
                       pacs_nodes=tuple(line.strip() for line in self.pacs_nodes.toPlainText().splitlines()
                                        if line.strip()),
                       ae_title=self.ae_title.text().strip(), move_port=self.move_port.value(),
                       pacs_ca_file=self.pacs_ca_file.text().strip(),
                       pacs_certificate_file=self.pacs_certificate_file.text().strip(),
                       pacs_key_file=self.pacs_key_file.text().strip(),
                       send_annotated_image=self.send_annotated_image.isChecked())
        if settings.tls:  # the files read as TLS will read them: a file that is not PEM is refused now
            check_pem_files(settings.ca_file, settings.client_certificate_file, settings.client_key_file, "edge")
        settings.pacs_tls.check()
        return settings

    def accept(self) -> None:
        try:
            self.result_settings = self.collect()
        except ValueError as exc:
            self.error.setText(f"Not saved: {exc}")
            return
        super().accept()

    def test_connection(self) -> Worker | None:
        try:
            settings = self.collect()
        except ValueError as exc:
            self.test_result.setText(f"Cannot test: {exc}")
            return None
        if settings.edge is None:
            self.test_result.setText("No edge server set (or split is Local only).")
            return None
        self.test_button.setEnabled(False)
        self.test_result.setText("Testing " + ", ".join(edge.address for edge in settings.edges) + "…")

        def line(check: EdgeCheck) -> str:
            status, link = check.status, check.link
            if status is None:
                return f"{check.address}: failed: {check.problem}"
            text = (f"{check.address}: live: {status.live}, ready: {status.ready}, Triton {status.version}; "
                    f"{len(status.models)} models: {', '.join(status.models) or 'none'}; ")
            if link is not None:
                return text + (f"round trip {link.round_trip_ms:.1f} ms, upload {link.upload_mbit_s:.0f} Mbit/s "
                               f"(measured with {link.payload_bytes / 2**20:.0f} MiB)")
            return text + f"checks took {status.round_trip_ms:.0f} ms; {check.problem}"

        def shown(checks: list[EdgeCheck]) -> None:  # a line per server: each is tested, not the first only
            self.test_button.setEnabled(True)
            self.test_result.setText("\n".join(line(check) for check in checks))

        def failed(exc) -> None:
            self.test_button.setEnabled(True)
            self.test_result.setText(f"Failed: {exc}")

        return self._run(check_edges, settings, True, on_result=shown, on_error=failed)

    def test_pacs(self) -> Worker | None:
        """C-ECHO each PACS node, in a worker: a line per node (its round trip, or why it did not answer)."""
        try:
            settings = self.collect()
        except ValueError as exc:
            self.pacs_result.setText(f"Cannot test: {exc}")
            return None
        if not settings.pacs:
            self.pacs_result.setText("No PACS node set.")
            return None
        self.test_pacs_button.setEnabled(False)
        self.pacs_result.setText("Testing " + ", ".join(map(str, settings.pacs)) + "…")

        def shown(lines: list[str]) -> None:
            self.test_pacs_button.setEnabled(True)
            self.pacs_result.setText("\n".join(lines))

        def failed(exc) -> None:
            self.test_pacs_button.setEnabled(True)
            self.pacs_result.setText(f"Failed: {exc}")

        return self._run(echo_each, settings.pacs, settings.ae_title, on_result=shown, on_error=failed)


def echo_each(nodes, ae_title: str) -> list[str]:
    """Reach every node (C-ECHO; DICOMweb: a QIDO-RS search): "NODE: C-ECHO ok in N ms", or the reason."""
    from pacs.dicomweb import DicomWebNode
    from pacs.dimse import DicomNetworkError
    from pacs.remote import echo

    lines = []
    for node in nodes:
        how = "QIDO-RS" if isinstance(node, DicomWebNode) else "C-ECHO"
        try:
            lines.append(f"{node}: {how} ok in {echo(node, ae_title, timeout_s=10):.0f} ms")
        except DicomNetworkError as exc:
            lines.append(str(exc))
    return lines

