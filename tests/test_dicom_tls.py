"""DICOM TLS (PS3.15 B.1) on the DIMSE paths: a real Orthanc with TLS on its DICOM port — echo, store, find and
C-GET through `tls:AET@host:port` — and `listen` with --tls-cert; a C-MOVE that comes back over DICOM TLS; the
one-line answers when the CA is not the node's or a plain association meets a TLS port."""

from __future__ import annotations

import socket
from dataclasses import replace

import pydicom
import pytest
from pydicom.uid import generate_uid
from test_listen import CANINE, Listener

from inference.edge.server import free_ports
from pacs.dimse import DicomNetworkError, echo, store
from pacs.nodes import DicomNode, PacsTls
from pacs.query import StudyQuery, find_studies, get_study
from viewer.loader import load_radiograph

from certificates import make_certificates
from orthanc import AE_TITLE, running_orthanc

pytestmark = pytest.mark.timeout(300)
US = "MEDEDGE"


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    return make_certificates(tmp_path_factory.mktemp("certificates"))


@pytest.fixture
def trusting(monkeypatch, certificates):
    monkeypatch.setenv("MEDEDGE_DICOM_CA", str(certificates["ca.pem"]))
    return certificates


def _instance(shared_cxr):
    ds = pydicom.dcmread(shared_cxr / CANINE)
    ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID = "P-TLS-3", generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    return ds


def test_a_pacs_over_dicom_tls(tmp_path, shared_cxr, trusting):
    files = trusting
    with running_orthanc(tmp_path / "orthanc", known={US: ("127.0.0.1", 1)},
                         dicom_tls=(files["ca.pem"], files["server.pem"], files["server.key"])) as orthanc:
        node = DicomNode.parse(f"tls:{AE_TITLE}@localhost:{orthanc.dicom_port}")
        assert node.tls and str(node).startswith("tls:")
        assert echo(node, US) > 0
        ds = _instance(shared_cxr)
        store(node, [ds], US)
        [found] = find_studies(node, StudyQuery(patient_id="P-TLS-3"), US)
        retrieved = get_study(node, found.study_uid, tmp_path / "cache", US)
        assert [load_radiograph(str(p)).info.patient_id for p in retrieved.files] == ["P-TLS-3"]

        plain = DicomNode(AE_TITLE, "localhost", orthanc.dicom_port)  # a plain association on the TLS port
        with pytest.raises(DicomNetworkError) as refused:
            echo(plain, US, timeout_s=5)
        assert str(refused.value).startswith(str(plain)) and "\n" not in str(refused.value)
        with pytest.raises(DicomNetworkError, match="certificate is not trusted"):
            echo(replace(node, tls_files=PacsTls(str(files["other-ca.pem"]))), US)


def test_the_dicom_node_over_tls_needs_no_insecure_beyond_loopback(tmp_path, shared_cxr, trusting):
    files = trusting
    listener = Listener(tmp_path / "node", "--host", "0.0.0.0", "--allow", US, "--tls-cert", str(files["server.pem"]),
                        "--tls-key", str(files["server.key"]))
    assert "(DICOM TLS)" in listener.text()
    node = DicomNode.parse(f"tls:MEDEDGE@localhost:{listener.port}")
    store(node, [_instance(shared_cxr)], US)
    listener.wait_for("analysed (local)")
    with pytest.raises(DicomNetworkError):
        echo(DicomNode("MEDEDGE", "localhost", listener.port), US, timeout_s=5)  # plaintext is not spoken there
    listener.wait_for("TLS handshake with 127.0.0.1 failed")  # and the node's log says so
    # From an attacker's side: a connection that never begins its handshake held up every other peer (the handshake
    # ran in the accepting thread); now each has its own, and the idle one is let go after HANDSHAKE_S.
    with socket.create_connection(("127.0.0.1", listener.port)):
        assert echo(node, US, timeout_s=5) > 0
    assert listener.stop() == 0


def test_a_c_move_comes_back_over_dicom_tls(tmp_path, shared_cxr, certificates):
    """A TLS node retrieves by C-MOVE to this workstation's certificate: the PACS connects back over DICOM TLS,
    its certificate checked against the PACS CA; a PACS that sends in plaintext gets nothing in, and one whose
    certificate the PACS CA did not sign is refused at the association."""
    files = certificates
    move_port = free_ports(1)[0]
    workstation = PacsTls(str(files["ca.pem"]), str(files["client.pem"]), str(files["client.key"]))
    with running_orthanc(tmp_path / "orthanc", known={US: ("127.0.0.1", move_port, "tls"),
                                                      "PLAINWS": ("127.0.0.1", move_port)},
                         dicom_tls=(files["ca.pem"], files["server.pem"], files["server.key"])) as orthanc:
        node = DicomNode(AE_TITLE, "localhost", orthanc.dicom_port, tls=True, tls_files=workstation)
        ds = _instance(shared_cxr)
        store(node, [ds], US)
        retrieved = get_study(node, str(ds.StudyInstanceUID), tmp_path / "cache", US, move_port=move_port)
        assert [load_radiograph(str(p)).info.patient_id for p in retrieved.files] == ["P-TLS-3"]

        # the PACS sends in plaintext to a workstation that listens over TLS: refused, said in one line
        with pytest.raises(DicomNetworkError) as plain:
            get_study(node, str(ds.StudyInstanceUID), tmp_path / "plain", "PLAINWS", move_port=move_port)
        assert "C-MOVE" in str(plain.value) and "\n" not in str(plain.value)
        assert not list((tmp_path / "plain").rglob("*.dcm"))

        # a PACS CA that did not sign the PACS's certificate: the retrieve stops at the association, nothing comes
        distrusting = replace(node, tls_files=PacsTls(str(files["other-ca.pem"]), str(files["client.pem"]),
                                                      str(files["client.key"])))
        with pytest.raises(DicomNetworkError, match="certificate is not trusted"):
            get_study(distrusting, str(ds.StudyInstanceUID), tmp_path / "other", US, move_port=move_port)
        assert not list((tmp_path / "other").rglob("*.dcm"))

        without = replace(node, tls_files=PacsTls(str(files["ca.pem"])))  # no certificate of its own
        with pytest.raises(DicomNetworkError, match="needs this workstation's certificate|this workstation's "
                                                    "certificate"):
            get_study(without, str(ds.StudyInstanceUID), tmp_path / "none", US, move_port=move_port)
