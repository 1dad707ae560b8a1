"""Query and retrieve against a real Orthanc: C-FIND studies and series with the panel's filters, C-GET a study
into the cache (with progress and cancel), and one-line errors from nodes that refuse or are not there."""

from __future__ import annotations

import http.server
import threading
from datetime import date

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from inference.edge.server import free_ports
from pacs.dimse import DicomNetworkError, echo, store
from pacs.nodes import DicomNode
from pacs.query import RetrieveCancelled, StudyQuery, find_series, find_studies, get_study
from viewer.loader import load_radiograph

from orthanc import AE_TITLE, running_orthanc

pytestmark = pytest.mark.timeout(300)
CANINE = "dicom/highdicom_dx_image_canine_thorax.dcm"
US = "MEDEDGE"


@pytest.fixture(scope="module")
def pacs(tmp_path_factory, shared_cxr):
    """An Orthanc holding two patients' studies, a one-image and a five-image DX study of a real radiograph, loaded
    by C-STORE. (Not the shared JPEG 2000 CR: a fragment of odd length, which Orthanc's DIMSE layer refuses.)"""
    move_port = free_ports(1)[0]  # where this workstation receives a C-MOVE, as the PACS has it declared
    with running_orthanc(tmp_path_factory.mktemp("orthanc"), known={US: ("127.0.0.1", move_port)}) as orthanc:
        node = DicomNode(AE_TITLE, "127.0.0.1", orthanc.dicom_port)
        cr = pydicom.dcmread(shared_cxr / CANINE)
        cr.PatientName, cr.PatientID, cr.StudyDate = "Rossi^Maria", "P-CR-1", "20240105"
        cr.StudyInstanceUID, cr.SeriesInstanceUID = generate_uid(), generate_uid()
        cr.SOPInstanceUID = cr.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        dx_study = generate_uid()
        series = [generate_uid(), generate_uid()]
        images = []
        for index in range(5):
            ds = pydicom.dcmread(shared_cxr / CANINE)
            ds.PatientName, ds.PatientID, ds.StudyDate, ds.AccessionNumber = "Bianchi^Luca", "P-DX-2", "20241120", "A77"
            ds.StudyInstanceUID, ds.SeriesInstanceUID = dx_study, series[index % 2]
            ds.SeriesNumber = index % 2 + 1
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            images.append(ds)
        ct = pydicom.dcmread(get_testdata_file("CT_small.dcm"))  # the same study's CT series, done the same day
        ct.PatientName, ct.PatientID, ct.StudyDate, ct.AccessionNumber = "Bianchi^Luca", "P-DX-2", "20241120", "A77"
        ct.StudyInstanceUID, ct.SeriesInstanceUID, ct.SeriesNumber, ct.SeriesDescription = dx_study, generate_uid(), 3, ""
        ct.SOPInstanceUID = ct.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        store(node, [cr, *images, ct], US)
        yield node, str(cr.StudyInstanceUID), dx_study, move_port


def test_echo_and_find_studies_with_the_panels_filters(pacs):
    node, cr_study, dx_study, _ = pacs
    assert echo(node, US) > 0
    everything = find_studies(node, StudyQuery(), US)
    assert [s.study_uid for s in everything] == [dx_study, cr_study]  # newest first
    dx = everything[0]
    assert (dx.patient_name, dx.patient_id, dx.accession_number, dx.study_date, dx.images) == (
        "Bianchi, Luca", "P-DX-2", "A77", "20241120", 6)
    assert "DX" in dx.modalities
    assert [s.study_uid for s in find_studies(node, StudyQuery(patient_name="ROSSI*"), US)] == [cr_study]
    assert [s.study_uid for s in find_studies(node, StudyQuery(patient_id="P-DX-2"), US)] == [dx_study]
    assert [s.study_uid for s in find_studies(node, StudyQuery(accession_number="A77"), US)] == [dx_study]
    assert [s.study_uid for s in find_studies(node, StudyQuery(date_from=date(2024, 6, 1)), US)] == [dx_study]
    assert [s.study_uid for s in find_studies(node, StudyQuery(date_to=date(2024, 6, 1)), US)] == [cr_study]
    assert find_studies(node, StudyQuery(modalities=("MR",)), US) == []
    assert [(s.number, s.images) for s in find_series(node, dx_study, US)] == [("1", 3), ("2", 2), ("3", 1)]
    # a name outside Latin-1 is sent in UTF-8: as "?" (pydicom's replacement, DICOM's one-character wildcard) it
    # matched every patient
    assert find_studies(node, StudyQuery(patient_name="张*"), US) == []
    assert [s.study_uid for s in find_studies(node, StudyQuery(patient_name="Bianchi*", patient_id="P-DX-2"), US)] \
        == [dx_study]
    with pytest.raises(ValueError, match="is after"):
        StudyQuery(date_from=date(2024, 2, 1), date_to=date(2024, 1, 1))


def test_get_study_fills_the_cache_with_images_the_viewer_opens(pacs, tmp_path):
    node, _, dx_study, _ = pacs
    seen = []
    retrieved = get_study(node, dx_study, tmp_path / "cache", US, progress=lambda done, total: seen.append(total))
    assert len(retrieved.files) == 5 and not retrieved.refused
    assert retrieved.skipped == ["CT series #3"]  # left on the PACS: asked for, the whole retrieve failed (0xC000)
    assert all(path.parent == tmp_path / "cache" / dx_study for path in retrieved.files)
    assert {load_radiograph(str(path)).info.patient_id for path in retrieved.files} == {"P-DX-2"}
    assert 5 in seen  # the PACS said how many were coming
    assert not list((tmp_path / "cache").rglob("*.partial"))


def test_a_cancelled_retrieve_stops_and_keeps_what_came(pacs, tmp_path):
    node, _, dx_study, _ = pacs
    cancel = threading.Event()
    with pytest.raises(RetrieveCancelled, match="retrieve cancelled"):
        get_study(node, dx_study, tmp_path / "cache", US, cancel=cancel, progress=lambda done, total: cancel.set())
    kept = list((tmp_path / "cache" / dx_study).glob("*.dcm"))
    assert 1 <= len(kept) < 5 and all(load_radiograph(str(p)) for p in kept)


def test_nodes_that_refuse_or_are_not_there_say_so_in_one_line(pacs, tmp_path):
    node, _, dx_study, _ = pacs
    stranger = "STRANGER"  # not declared to the PACS: it may echo and store, not query
    with pytest.raises(DicomNetworkError) as refused:
        find_studies(node, StudyQuery(), stranger)
    assert str(refused.value).startswith(str(node)) and "\n" not in str(refused.value)
    assert stranger in str(refused.value)  # the likely cause named: this workstation's AE title
    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    try:  # a web server's port given as the PACS's DICOM port
        with pytest.raises(DicomNetworkError, match="is 127.0.0.1:[0-9]+ its DICOM port"):
            echo(DicomNode("PACS", "127.0.0.1", web.server_address[1]), US, timeout_s=5)
    finally:
        web.shutdown()
    nobody = DicomNode("PACS", "127.0.0.1", free_ports(1)[0])
    for call in (lambda: echo(nobody, US, timeout_s=3), lambda: find_studies(nobody, StudyQuery(), US, timeout_s=3),
                 lambda: get_study(nobody, dx_study, tmp_path, US, timeout_s=3)):
        with pytest.raises(DicomNetworkError, match="no answer"):
            call()
    with pytest.raises(ValueError, match="expected AET@host:port"):
        DicomNode.parse("pacs.example.org:104")


def test_c_move_brings_the_study_to_this_workstations_storage_port(pacs, tmp_path):
    node, _, dx_study, move_port = pacs
    seen = []
    retrieved = get_study(node, dx_study, tmp_path / "cache", US, move_port=move_port,
                          progress=lambda done, total: seen.append(done))
    assert len(retrieved.files) == 5 and not retrieved.refused and seen[-1] == 5
    assert retrieved.skipped == ["CT series #3"]
    assert {load_radiograph(str(path)).info.patient_id for path in retrieved.files} == {"P-DX-2"}
    with pytest.raises(DicomNetworkError) as unknown:  # a destination the PACS was not told about
        get_study(node, dx_study, tmp_path / "elsewhere", "STRANGER", move_port=free_ports(1)[0])
    assert str(unknown.value).startswith(str(node)) and "\n" not in str(unknown.value)



def test_a_c_move_that_fails_to_begin_closes_its_port(pacs, tmp_path, monkeypatch):
    """The PACS answers the series query, then its C-MOVE association fails (here: refused once by the test, through
    the real association code): the port C-MOVEs come back to closes with the failure. It stayed open, listening on
    every interface, and every later C-MOVE failed with "Address already in use"."""
    from pacs import query

    node, _, dx_study, move_port = pacs
    real = query._associate

    def move_refused(*args, move=False, **kwargs):
        if move:
            raise DicomNetworkError(f"{node}: no answer")
        return real(*args, **kwargs)

    monkeypatch.setattr(query, "_associate", move_refused)
    with pytest.raises(DicomNetworkError, match="no answer"):
        get_study(node, dx_study, tmp_path / "nowhere", US, move_port=move_port)
    monkeypatch.setattr(query, "_associate", real)
    again = get_study(node, dx_study, tmp_path / "again", US, move_port=move_port)
    assert len(again.files) == 5



def test_nodes_are_written_as_people_name_them():
    from pacs.remote import parse_node

    main = parse_node(" Main  PACS = ORTHANC@pacs.example.org:4242")
    assert (main.name, main.address, str(main)) == ("Main PACS", "ORTHANC@pacs.example.org:4242",
                                                     "Main PACS (ORTHANC@pacs.example.org:4242)")
    assert parse_node("tls:PACS@[::1]:2762").address == "tls:PACS@[::1]:2762"
    web = parse_node("Cloud = https://pacs.example.org/dicom-web?site=a")
    assert (web.name, web.url) == ("Cloud", "https://pacs.example.org/dicom-web?site=a")
    assert parse_node("https://pacs.example.org/dicom-web?site=a").name == ""  # the URL's own `=`
    with pytest.raises(ValueError, match="expected AET@host:port"):
        parse_node("Main PACS = pacs.example.org")


def test_a_link_cut_or_stalled_mid_retrieve_says_so_and_keeps_what_came(pacs, tmp_path):
    """Through a relay the test controls: the link cut after the first image (the association dies mid-transfer),
    then stalled (nothing answers): each a one-line DicomNetworkError, the images already received kept."""
    from bench.relay import Relay

    node, _, dx_study, _ = pacs
    with Relay((node.host, node.port)) as relay:
        via = DicomNode(node.ae_title, "127.0.0.1", relay.port)
        cut = tmp_path / "cut"
        with pytest.raises(DicomNetworkError) as aborted:
            get_study(via, dx_study, cut, US, timeout_s=5, progress=lambda done, total: relay.cut() if done else None)
        assert str(aborted.value).startswith(str(via)) and "\n" not in str(aborted.value)
        kept = list((cut / dx_study).glob("*.dcm"))
        assert 1 <= len(kept) < 5 and all(load_radiograph(str(p)) for p in kept)
        assert not list((cut / dx_study).glob("*.partial"))
        relay.restore()
        relay.stall()  # the connection opens; no byte comes back
        with pytest.raises(DicomNetworkError) as stalled:
            find_studies(via, StudyQuery(), US, timeout_s=3)
        assert str(stalled.value).startswith(str(via)) and "\n" not in str(stalled.value)
        relay.resume()
