"""DICOMweb against a real Orthanc with its DICOMweb plugin, over HTTPS with HTTP basic auth: STOW-RS, QIDO-RS with
the panel's filters, WADO-RS into the cache (and cancelled), the SR stored and read back — and the one-line
answers when the credentials, the certificate or the URL are wrong; the sign-in kept in a real system keyring
(GNOME Keyring's Secret Service) and set in the Settings dialog."""

from __future__ import annotations

import copy
import threading
from dataclasses import replace

import pydicom
import pytest
from keyring_service import AVAILABLE as KEYRING
from keyring_service import running_keyring
from pydicom.data import get_testdata_file
from pydicom.uid import JPEG2000Lossless, generate_uid

from app.results import write_and_send
from app.settings import AppSettings, load_settings, save_settings
from app.settings_dialog import SettingsDialog
from inference.config import ModelKind
from inference.models.findings import Detection, Findings, Mode, ModelRun
from pacs.credentials import SignIn, store_sign_in
from pacs.dicomweb import DicomWebNode
from pacs.dimse import DicomNetworkError
from pacs.nodes import PacsTls
from pacs.query import RetrieveCancelled, StudyQuery
from pacs.remote import echo, find_series, find_studies, get_study, parse_node, store
from viewer.loader import load_radiograph

from certificates import make_certificates
from orthanc import DICOMWEB_PLUGIN, running_orthanc

pytestmark = [pytest.mark.timeout(300),
              pytest.mark.skipif(not DICOMWEB_PLUGIN.exists(), reason="orthanc-dicomweb is not installed")]
CANINE = "dicom/highdicom_dx_image_canine_thorax.dcm"
COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
USER = ("radiology", "s3cret-pass")


@pytest.fixture(scope="module")
def web_pacs(tmp_path_factory, shared_cxr):
    """An Orthanc serving DICOMweb over HTTPS (a test CA) behind basic auth, with a four-image DX study stored by
    STOW-RS."""
    folder = tmp_path_factory.mktemp("dicomweb")
    files = make_certificates(folder)
    with running_orthanc(folder / "orthanc", dicomweb=True, tls=(files["ca.pem"], files["server.pem"],
                                                                   files["server.key"]), user=USER) as orthanc:
        with pytest.MonkeyPatch.context() as env:
            env.setenv("MEDEDGE_DICOMWEB_CA", str(files["ca.pem"]))
            env.setenv("MEDEDGE_DICOMWEB_USER", USER[0])
            env.setenv("MEDEDGE_DICOMWEB_PASSWORD", USER[1])
            node = parse_node(orthanc.dicomweb)
            study, series = generate_uid(), generate_uid()
            images = []
            for _ in range(4):
                ds = pydicom.dcmread(shared_cxr / CANINE)
                ds.PatientName, ds.PatientID, ds.StudyDate = "Gallo^Sara", "P-WEB-7", "20241002"
                ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SeriesNumber = study, series, 1
                ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
                images.append(ds)
            # the same study's second series, a radiograph in JPEG 2000 (which this Orthanc cannot transcode), and
            # a CT series beside them, as a study holds when a CT was done the same day
            j2k = copy.deepcopy(images[0])
            j2k.SeriesInstanceUID, j2k.SeriesNumber = generate_uid(), 2
            j2k.SOPInstanceUID = j2k.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            j2k.compress(JPEG2000Lossless)
            ct = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
            ct.PatientName, ct.PatientID, ct.StudyDate = "Gallo^Sara", "P-WEB-7", "20241002"
            ct.StudyInstanceUID, ct.SeriesInstanceUID, ct.SeriesNumber = study, generate_uid(), 3
            ct.SeriesDescription = "Thorax"
            ct.SOPInstanceUID = ct.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            store(node, [*images, j2k, ct], "MEDEDGE")
            yield orthanc, node, study, files


def test_search_retrieve_and_store_over_https(web_pacs, tmp_path):
    orthanc, node, study, _ = web_pacs
    assert isinstance(node, DicomWebNode) and echo(node, "MEDEDGE") > 0
    [found] = find_studies(node, StudyQuery(patient_name="GALLO*"), "MEDEDGE")
    assert (found.study_uid, found.patient_name, found.patient_id, found.images) == (study, "Gallo, Sara", "P-WEB-7", 6)
    assert find_studies(node, StudyQuery(patient_name="NOBODY*"), "MEDEDGE") == []
    assert [(s.modality, s.images) for s in find_series(node, study, "MEDEDGE")] == [("DX", 4), ("DX", 1), ("CT", 1)]

    # the radiographs as the PACS holds them (the JPEG 2000 one too: asked for uncompressed, this Orthanc fails with
    # HTTP 500), the CT left on the PACS and named
    retrieved = get_study(node, study, tmp_path / "cache", "MEDEDGE")
    assert len(retrieved.files) == 5 and not retrieved.refused and retrieved.skipped == ["CT series #3 (Thorax)"]
    syntaxes = {pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID for path in retrieved.files}
    assert JPEG2000Lossless in syntaxes
    radiographs = [load_radiograph(str(path)) for path in retrieved.files]
    radiograph = next(r for r in radiographs if r.transfer_syntax != JPEG2000Lossless)
    assert {r.info.patient_id for r in radiographs} == {"P-WEB-7"}

    findings = Findings(radiograph.path, (Detection("opacity", 0.8, (10, 10, 60, 60)),), {"Effusion": 0.6},
                        {ModelKind.DETECTOR: ModelRun("demo", 32), ModelKind.CLASSIFIER: ModelRun("demo", 10)},
                        Mode.LOCAL)
    outcome = write_and_send(findings, radiograph.header, tmp_path / "sr", destination=node)
    assert outcome["sent"] == str(node), outcome
    [sr] = orthanc.instances_of_class(COMPREHENSIVE_SR)
    assert sr["SOPInstanceUID"] == str(pydicom.dcmread(outcome["sr"]).SOPInstanceUID)


def test_a_wado_retrieve_can_be_cancelled(web_pacs, tmp_path):
    _, node, study, _ = web_pacs
    cancel = threading.Event()
    with pytest.raises(RetrieveCancelled):
        get_study(node, study, tmp_path, "MEDEDGE", cancel=cancel, progress=lambda done, total: cancel.set())
    assert 1 <= len(list((tmp_path / study).glob("*.dcm"))) < 5


def test_wrong_credentials_certificates_and_urls_say_so_in_one_line(web_pacs, monkeypatch):
    orthanc, node, _, files = web_pacs
    monkeypatch.setenv("MEDEDGE_DICOMWEB_PASSWORD", "wrong")
    with pytest.raises(DicomNetworkError, match="not authorised"):
        echo(node, "MEDEDGE")
    monkeypatch.setenv("MEDEDGE_DICOMWEB_PASSWORD", USER[1])
    with pytest.raises(DicomNetworkError, match="certificate is not trusted"):
        find_studies(replace(node, tls_files=PacsTls(str(files["other-ca.pem"]))), StudyQuery(), "MEDEDGE")
    with pytest.raises(DicomNetworkError, match="no DICOMweb service at this URL"):
        echo(parse_node(orthanc.dicomweb.replace("/dicom-web", "/no-such-service")), "MEDEDGE")
    for url, says in (("http://pacs.example.org/dicom-web", "https only"),
                      ("https://user:pw@pacs.example.org/dicom-web", "no credentials in it"),
                      ("ftp://pacs/dicom-web", "expected AET@host:port")):
        with pytest.raises(ValueError, match=says):
            parse_node(url)


@pytest.mark.skipif(not KEYRING, reason="dbus and gnome-keyring are not installed")
def test_the_viewer_signs_in_with_what_the_keyring_holds(web_pacs, tmp_path, monkeypatch):
    """The viewer's nodes come from its Settings (the CA file) and the keyring (the sign-in), not the environment;
    a sign-in in the keyring wins over the environment's."""
    orthanc, _, study, files = web_pacs
    for variable in ("MEDEDGE_DICOMWEB_USER", "MEDEDGE_DICOMWEB_PASSWORD", "MEDEDGE_DICOMWEB_CA"):
        monkeypatch.delenv(variable)
    [node] = AppSettings(pacs_nodes=(f"Web PACS = {orthanc.dicomweb}",), pacs_ca_file=str(files["ca.pem"])).pacs
    with running_keyring(tmp_path / "keyring"):
        with pytest.raises(DicomNetworkError, match=r"not authorised \(check the sign-in: none\)"):
            echo(node, "MEDEDGE")
        store_sign_in(node.url, SignIn(*USER))
        monkeypatch.setenv("MEDEDGE_DICOMWEB_USER", "someone-else")
        [found] = find_studies(node, StudyQuery(patient_id="P-WEB-7"), "MEDEDGE")
        assert found.study_uid == study
        store_sign_in(node.url, SignIn(USER[0], "wrong"))
        with pytest.raises(DicomNetworkError, match=r"not authorised \(check the sign-in: user radiology\)"):
            echo(node, "MEDEDGE")


@pytest.mark.skipif(not KEYRING, reason="dbus and gnome-keyring are not installed")
def test_the_settings_dialog_keeps_the_sign_in_in_the_keyring_only(qtbot, tmp_path):
    from PySide6.QtCore import QSettings

    url = "https://pacs.example.org/dicom-web"
    store = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)

    def dialog_for(settings: AppSettings) -> SettingsDialog:
        dialog = SettingsDialog(settings)
        qtbot.addWidget(dialog)
        return dialog

    with running_keyring(tmp_path / "keyring"):
        dialog = dialog_for(AppSettings())
        assert not dialog.save_sign_in_button.isEnabled()  # no DICOMweb node yet
        dialog.pacs_nodes.setPlainText(f"Main PACS = ORTHANC@pacs.example.org:104\nWeb = {url}")
        assert [dialog.sign_in_node.itemData(i) for i in range(dialog.sign_in_node.count())] == [url]
        qtbot.waitUntil(lambda: "no sign-in stored" in dialog.sign_in_state.text(), timeout=10_000)
        dialog.sign_in_user.setText(USER[0])
        dialog.sign_in_secret.setText(USER[1])
        dialog.save_sign_in_button.click()
        qtbot.waitUntil(lambda: "sign-in saved in the keyring (user radiology)" in dialog.sign_in_state.text(),
                        timeout=10_000)
        assert dialog.sign_in_secret.text() == ""  # not left on screen
        dialog.accept()
        save_settings(dialog.result_settings, store)
        assert USER[1] not in (tmp_path / "settings.ini").read_text()  # the settings file never holds it

        again = dialog_for(load_settings(store)[0])  # what is stored is said, never shown
        qtbot.waitUntil(lambda: "sign-in stored in the keyring (user radiology)" in again.sign_in_state.text(),
                        timeout=10_000)
        assert again.sign_in_secret.text() == "" and again.sign_in_user.text() == ""
        again.save_sign_in_button.click()  # both empty: forgotten
        qtbot.waitUntil(lambda: "sign-in forgotten" in again.sign_in_state.text(), timeout=10_000)
    without = dialog_for(load_settings(store)[0])  # no keyring on this system: said in one line
    without.sign_in_user.setText(USER[0])
    without.sign_in_secret.setText(USER[1])
    without.save_sign_in_button.click()
    qtbot.waitUntil(lambda: "this system runs no keyring" in without.sign_in_state.text(), timeout=10_000)
    assert "\n" not in without.sign_in_state.text()
