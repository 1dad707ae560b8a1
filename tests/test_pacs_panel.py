"""The viewer's PACS panel against a real Orthanc, under pytest-qt: search with the filters, look into a study's
series, retrieve it (into the cache, opened in the Studies list, analysed on retrieve), cancel a retrieve, and
send the findings back as a DICOM SR with the annotated view."""

from __future__ import annotations

from dataclasses import replace

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from PySide6.QtWidgets import QMessageBox

from app.pacs_panel import WIDEST_COLUMN, cache_folder
from app.settings_dialog import SettingsDialog
from pacs import dimse
from pacs.nodes import DicomNode

from orthanc import AE_TITLE, running_orthanc
from test_main_window import store, window  # noqa: F401  (fixtures)

pytestmark = pytest.mark.timeout(600)
CANINE = "dicom/highdicom_dx_image_canine_thorax.dcm"
COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
GRAYSCALE_PRESENTATION_STATE = "1.2.840.10008.5.1.4.1.1.11.1"


def _study(shared_cxr, patient: str, images: int) -> tuple[str, list]:
    study, series = generate_uid(), generate_uid()
    datasets = []
    for index in range(images):
        ds = pydicom.dcmread(shared_cxr / CANINE)
        ds.PatientName, ds.PatientID, ds.StudyDate = patient, patient.upper()[:8], "20241120"
        ds.StudyDescription = "Chest PA and lateral, follow-up of community-acquired pneumonia"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = index + 1
        datasets.append(ds)
    return study, datasets


@pytest.fixture(scope="module")
def pacs(tmp_path_factory, shared_cxr):
    with running_orthanc(tmp_path_factory.mktemp("orthanc"), known={"MEDEDGE": ("127.0.0.1", 1)}) as orthanc:
        node = DicomNode(AE_TITLE, "127.0.0.1", orthanc.dicom_port)
        small, small_images = _study(shared_cxr, "Verdi^Anna", 3)
        large, large_images = _study(shared_cxr, "Neri^Paolo", 60)
        ct = pydicom.dcmread(get_testdata_file("CT_small.dcm"))  # Verdi's study also holds a CT series
        ct.PatientName, ct.PatientID, ct.StudyDate = "Verdi^Anna", "VERDI^AN", "20241120"
        ct.StudyInstanceUID, ct.SeriesInstanceUID, ct.SeriesNumber, ct.SeriesDescription = small, generate_uid(), 2, "Thorax"
        ct.SOPInstanceUID = ct.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        dimse.store(node, small_images + large_images + [ct], "MEDEDGE")
        yield orthanc, node, small, large


def _with_pacs(window, node):
    window.apply_settings(replace(window.settings, pacs_nodes=(str(node),)))
    return window.pacs_panel


def test_search_retrieve_analyse_and_send_back(qtbot, window, pacs):
    orthanc, node, small, _ = pacs
    panel = _with_pacs(window, node)
    assert panel.status.text() == ""  # not "No PACS node set" once one is
    panel.patient_name.setText("VERDI*")
    panel.modalities.setText("CR,DX")
    panel.modalities.returnPressed.emit()  # Return searches from every filter
    qtbot.waitUntil(lambda: "1 study found" in panel.status.text(), timeout=30_000)
    row = panel.results.topLevelItem(0)
    assert (row.text(0), row.text(2), row.text(6)) == ("Verdi, Anna", "2024-11-20", "4")
    # a long description widens its column (not cut to a dozen letters by the default width), and its tooltip has it
    description = row.text(3)
    assert row.toolTip(3) == description and panel.results.columnWidth(3) >= min(
        WIDEST_COLUMN, panel.results.fontMetrics().horizontalAdvance(description))
    row.setExpanded(True)  # its series, asked when opened
    qtbot.waitUntil(lambda: row.childCount() == 2 and row.child(0).text(0).startswith("Series"), timeout=30_000)

    panel.analyse.setChecked(True)
    buttons = panel.retrieve_button.geometry()
    panel.retrieve_button.click()
    assert not panel.clear_button.isEnabled() and panel.retrieve_button.geometry() == buttons  # nothing jumps
    qtbot.waitUntil(lambda: len(window.study_list.paths) == 3, timeout=60_000)
    assert all(path.startswith(str(cache_folder() / small)) for path in window.study_list.paths)
    # the radiographs came; the CT stayed on the PACS, and the status says so (the whole retrieve failed before)
    assert panel.status.text() == ("Retrieved 3 image(s); not retrieved: CT series #2 (Thorax) (the models read CR "
                                   "and DX radiographs)")
    qtbot.waitUntil(lambda: "Analyze all finished: 3 of 3 analysed" in window.statusBar().currentMessage(),
                    timeout=300_000)

    assert window.current is not None and window.studies.findings(window.current) is not None
    window.apply_settings(replace(window.settings, send_annotated_image=True))
    window.send_results()
    qtbot.waitUntil(lambda: "The DICOM SR and the annotated image sent to" in window.statusBar().currentMessage(),
                    timeout=60_000)
    [sr] = orthanc.instances_of_class(COMPREHENSIVE_SR)
    [image] = orthanc.instances_of_class(SECONDARY_CAPTURE)
    for result in (sr, image):  # each belongs to the study it was made from
        assert (result["PatientID"], result["StudyInstanceUID"]) == ("VERDI^AN", small)
    assert image["BurnedInAnnotation"] == "YES" and image["ImageType"] == "DERIVED\\SECONDARY"
    assert "DEMO WEIGHTS" in image["SeriesDescription"]  # the demo weights say so in the PACS's listing too


def test_a_retrieve_can_be_cancelled_and_bad_filters_say_why(qtbot, window, pacs, monkeypatch):
    _, node, _, large = pacs
    panel = _with_pacs(window, node)
    panel.date_from.setText("20-11-2024")
    panel.search_button.click()
    assert "from date '20-11-2024': expected a date as YYYY-MM-DD" in panel.status.text()
    panel.date_from.setText("2024-11-01")
    panel.patient_id.setText("NERI^PAO")
    panel.search_button.click()
    qtbot.waitUntil(lambda: "1 study found" in panel.status.text(), timeout=30_000)
    panel.progressed.connect(lambda done, total: panel.cancel())  # as soon as the first image is in
    panel.retrieve_button.click()
    qtbot.waitUntil(lambda: "Retrieve cancelled" in panel.status.text(), timeout=60_000)
    kept = list((cache_folder() / large).glob("*.dcm"))
    assert 1 <= len(kept) < 60
    assert panel.retrieve_button.isEnabled() and not panel.cancel_button.isEnabled() and panel.clear_button.isEnabled()
    # what came is opened (not analysed), not left in the cache out of reach
    qtbot.waitUntil(lambda: len([p for p in window.study_list.paths if large in p]) == len(kept), timeout=60_000)
    assert panel.status.text() == f"Retrieve cancelled; {len(kept)} image(s) received, opened"

    # Clear cache asks first (it deleted at once, the open studies' files too); No keeps everything
    answers = [QMessageBox.StandardButton.No, QMessageBox.StandardButton.Yes]
    monkeypatch.setattr(QMessageBox, "question", lambda *args: answers.pop(0))
    assert panel.clear_cache() is None and all(path.is_file() for path in kept)
    with qtbot.waitSignal(panel.clear_cache().signals.returned, timeout=30_000):
        pass
    assert not cache_folder().exists() and panel.status.text() == f"Cache cleared ({cache_folder()})"
    assert window.studies.get(window.current) is not None  # what is on screen stays, in memory


def test_the_listed_studies_are_those_of_the_node_chosen(qtbot, window, pacs):
    """Search one node, choose another: the list goes (a retrieve would have asked the other node for them); a
    search that fails, or filters that cannot be searched, leave no list of an earlier search behind."""
    _, node, _, _ = pacs
    down = DicomNode("DOWN", "127.0.0.1", 9)
    window.apply_settings(replace(window.settings, pacs_nodes=(str(node), str(down))))
    panel = window.pacs_panel
    panel.patient_name.setText("VERDI*")
    panel.search_button.click()
    qtbot.waitUntil(lambda: "1 study found" in panel.status.text(), timeout=30_000)
    window.apply_settings(replace(window.settings, theme=window.settings.theme))  # Settings' OK: same nodes
    assert panel.results.topLevelItemCount() == 1
    panel.node.setCurrentIndex(1)
    assert panel.results.topLevelItemCount() == 0
    window.apply_settings(replace(window.settings, theme=window.settings.theme))
    assert panel.chosen_node() == down  # Settings' OK keeps the node chosen
    panel.retrieve_button.click()
    assert panel.status.text() == "Choose a study to retrieve"
    panel.node.setCurrentIndex(0)
    panel.search_button.click()
    qtbot.waitUntil(lambda: "1 study found" in panel.status.text(), timeout=30_000)
    panel.date_from.setText("yesterday")
    panel.search_button.click()
    assert panel.status.text().startswith("Not searched") and panel.results.topLevelItemCount() == 0


def test_settings_take_pacs_nodes_and_test_them(qtbot, window, pacs):
    _, node, _, _ = pacs
    dialog = SettingsDialog(window.settings, window)
    qtbot.addWidget(dialog)
    dialog.pacs_nodes.setPlainText("pacs.example.org:104")
    dialog.accept()
    assert "Not saved: DICOM node 'pacs.example.org:104': expected AET@host:port" in dialog.error.text()
    dialog.pacs_nodes.setPlainText(f"{node}\nOTHER@127.0.0.1:9")
    dialog.test_pacs_button.click()
    qtbot.waitUntil(lambda: dialog.test_pacs_button.isEnabled() and "C-ECHO ok" in dialog.pacs_result.text(),
                    timeout=60_000)
    first, second = dialog.pacs_result.text().splitlines()
    assert first.startswith(f"{node}: C-ECHO ok in") and second.startswith("OTHER@127.0.0.1:9: no answer")


def test_the_reading_is_sent_to_the_pacs_as_a_presentation_state(qtbot, window, pacs, shared_cxr):
    """File → Send the reading to PACS: the window, orientation and measurements go as a GSPS into the image's
    study on the real Orthanc."""
    orthanc, node, _, _ = pacs
    _with_pacs(window, node)
    window.open_path(shared_cxr / CANINE)
    qtbot.waitUntil(lambda: window.current == str(shared_cxr / CANINE), timeout=30_000)
    window.canvas.start_ruler()
    window.canvas.rotate(90)
    window.send_reading()
    qtbot.waitUntil(lambda: "The reading (presentation state) sent to" in window.statusBar().currentMessage()
                    or "not sent" in window.statusBar().currentMessage(), timeout=60_000)
    assert "sent to" in window.statusBar().currentMessage() and "not sent" not in window.statusBar().currentMessage()
    source = pydicom.dcmread(shared_cxr / CANINE, stop_before_pixels=True)
    [state] = orthanc.instances_of_class(GRAYSCALE_PRESENTATION_STATE)
    assert (state["StudyInstanceUID"], state["PatientID"]) == (source.StudyInstanceUID, source.PatientID)
    assert state["ImageRotation"] == "90" and state["SeriesDescription"] == "MedEdge reading"
