"""Nothing but tensors leaves the workstation: every byte sent to a real Triton server is captured by a TCP
relay in between and searched for the study's header values.

gRPC runs over HTTP/2, whose headers may be Huffman-coded (HPACK): each value is searched for as UTF-8,
UTF-16 and in its HPACK Huffman form, so a value sent as a header, a request parameter or a string in
the body would be found.
"""

from __future__ import annotations

import hpack
import pydicom
import pytest

from bench.relay import Relay
from inference.analysis.analyzer import Analyzer, ModelChoice
from inference.config import WireFormat
from inference.edge.client import EdgeClient, EdgeSettings
from inference.edge.repository import PartRequest, write_repository
from inference.models.detector import DetectorConfig
from inference.models.findings import Mode
from inference.planning.plan import ModelPlan, Plan
from inference.planning.planner import Planner
from viewer.loader import load_radiograph

from dicom_factory import dataset, gradient, write
from test_edge import start_server

TINY = DetectorConfig(input_size=128, width_multiple=0.25, depth_multiple=0.33)
pytestmark = pytest.mark.timeout(600)

TEXT_VRS = {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR", "UT"}
PHI = {
    "PatientName": "Zyxwv^Quentin^Marmaduke",
    "PatientID": "PID-77310042",
    "AccessionNumber": "ACC-55190833",
    "StudyInstanceUID": "1.2.826.0.1.3680043.8.498.77777777777777777777",
    "SeriesInstanceUID": "1.2.826.0.1.3680043.8.498.66666666666666666666",
    "SOPInstanceUID": "1.2.826.0.1.3680043.8.498.55555555555555555555",
    "PatientBirthDate": "19470312",
    "InstitutionName": "Saint Hypothetical Infirmary",
    "ReferringPhysicianName": "Oddbody^Clarence",
    "StudyDescription": "CHEST PA ERECT for QQX-3141",
    "OtherPatientIDs": "OTHERID-90210",
}


def _forms(value: str) -> list[bytes]:
    return [value.encode(), value.encode("utf-16-le"), hpack.huffman.HuffmanEncoder(
        hpack.huffman_constants.REQUEST_CODES, hpack.huffman_constants.REQUEST_CODES_LENGTH).encode(value.encode())]


def _header_values(path) -> dict[str, str]:
    """Every text value of the file (File Meta included) long enough not to turn up in tensors by chance."""
    ds = pydicom.dcmread(path)
    values = {}
    for element in [*ds.file_meta.iterall(), *ds.iterall()]:
        if element.VR in TEXT_VRS and element.value not in (None, ""):
            for value in (element.value if element.VM > 1 else [element.value]):
                if len(str(value)) >= 6:
                    values[f"{element.keyword} {value}"] = str(value)
    return values


def test_only_tensors_leave_the_workstation(tmp_path):
    pixels = gradient(256, 224, bits=12, seed=3)
    study = write(dataset(pixels, bits_stored=12, **PHI), tmp_path / "phi study.dcm")
    values = _header_values(study)
    assert set(PHI.values()) <= set(values.values())  # every identifier is in the header to leak
    analyzer = Analyzer(ModelChoice(detector=TINY, runtime="torch"))
    requests = [PartRequest(analyzer.detector, analyzer.detector_source, 0, WireFormat.FP32),
                PartRequest(analyzer.classifier, analyzer.classifier_weights.source, 7, WireFormat.INT8)]
    write_repository(tmp_path / "repository", requests, gpu=False)
    server = start_server(tmp_path / "repository", tmp_path)
    host, port = server.grpc_address.rsplit(":", 1)
    try:
        with Relay((host, int(port)), capture=True) as relay:
            analyzer.edge = EdgeClient(EdgeSettings(relay.address, timeout_s=60))
            plan = Plan(ModelPlan(0, WireFormat.FP32), ModelPlan(7, WireFormat.INT8))  # offload and a cut
            result = analyzer.analyze(load_radiograph(study), plan, allow_fallback=False)
            assert result.mode is Mode.DISTRIBUTED
            Planner(analyzer, analyzer.edge).plan()  # the probe, status and profiling requests too
            sent = bytes(relay.sent)
    finally:
        server.stop()
    assert len(sent) > 128 * 128 * 3 * 4  # the capture saw the offloaded image tensor…
    assert b"detector_cut00_fp32" in sent and b"classifier_cut07_int8" in sent  # …and the request bodies
    for name, value in values.items():
        for form in _forms(value):
            assert form not in sent, f"{name} left the workstation"
    assert b"phi study" not in sent and str(tmp_path).encode() not in sent  # nor the file's name or folder


def test_a_study_received_by_the_dicom_node_sends_only_tensors_too(tmp_path):
    """The same search on the new path: a study arrives at `listen` by C-STORE and is analysed split with the edge
    (detector offloaded, classifier cut at 7) through the capturing relay."""
    from test_listen import Listener, storescu

    pixels = gradient(256, 224, bits=12, seed=5)
    study = write(dataset(pixels, bits_stored=12, **PHI), tmp_path / "phi study.dcm")
    values = _header_values(study)
    model = Analyzer(ModelChoice(detector=DetectorConfig(input_size=128), runtime="torch"))  # as `listen` builds it
    requests = [PartRequest(model.detector, model.detector_source, 0, WireFormat.FP32),
                PartRequest(model.classifier, model.classifier_weights.source, 7, WireFormat.FP32)]
    write_repository(tmp_path / "repository", requests, gpu=False)
    server = start_server(tmp_path / "repository", tmp_path)
    host, port = server.grpc_address.rsplit(":", 1)
    try:
        with Relay((host, int(port)), capture=True) as relay:
            node = Listener(tmp_path / "node", "--edge", relay.address, "--split", "detector:0,classifier:7",
                            "--wire", "fp32")
            assert storescu(node.port, [study]).returncode == 0
            node.wait_for("analysed (distributed)", timeout=300)
            assert node.stop() == 0
            sent = bytes(relay.sent)
    finally:
        server.stop()
    assert b"detector_cut00_fp32" in sent and b"classifier_cut07_fp32" in sent
    for name, value in values.items():
        for form in _forms(value):
            assert form not in sent, f"{name} left the workstation"
    assert b"phi study" not in sent and str(tmp_path).encode() not in sent
