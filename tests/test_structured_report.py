"""The AI results as a DICOM Comprehensive SR (TID 1500): read back by pydicom, highdicom and dcmtk's dsrdump."""

from __future__ import annotations

import shutil
import subprocess

import cv2
import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes
from pydicom.uid import ComprehensiveSRStorage, SecondaryCaptureImageStorage

from inference.config import ModelKind, WireFormat
from inference.models.classifier import CHESTXRAY14
from inference.models.findings import Detection, Findings, Mode, ModelRun
from inference.reports.secondary_capture import BOX_COLOUR, View, build_secondary_capture, write_secondary_capture
from inference.reports.structured_report import (
    DEMO_MARK,
    OPACITY,
    PRIVATE_SCHEME,
    StructuredReportError,
    build_sr,
    finding_code,
    package_version,
    read_source_header,
    write_sr,
)
from viewer.display import render_8bit
from viewer.loader import load_radiograph

from dicom_factory import dataset, gradient, write
from test_main_window import open_and_wait, store, window  # noqa: F401 (pytest-qt fixtures of the viewer)

SHA = "0123456789abcdef" * 4
BOXES = [(12.5, 20.0, 80.25, 120.0), (100.0, 30.0, 150.0, 90.5)]
SCORES = [0.91, 0.47]


def _findings(path: str, demo_detector: bool = True) -> Findings:
    probabilities = {name: round(0.05 + 0.9 * i / len(CHESTXRAY14), 6) for i, name in enumerate(CHESTXRAY14)}
    return Findings(path=path, detections=tuple(Detection("opacity", s, b) for s, b in zip(SCORES, BOXES, strict=True)),
                    probabilities=probabilities,
                    models={ModelKind.DETECTOR: ModelRun("demo" if demo_detector else SHA, 6, wire=WireFormat.FP16),
                            ModelKind.CLASSIFIER: ModelRun(SHA, 7, wire=WireFormat.FP16)},
                    mode=Mode.DISTRIBUTED)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A generated DX study on disk (no birth date or sex: Type 2 attributes the SR must still carry)."""
    folder = tmp_path_factory.mktemp("study")
    ds = dataset(gradient(rows=200, columns=180), AccessionNumber="ACC-42", StudyID="7")
    path = write(ds, folder / "image.dcm")
    return path, pydicom.dcmread(path, stop_before_pixels=True)


@pytest.fixture(scope="module")
def sr_file(study, tmp_path_factory):
    path, header = study
    return write_sr(_findings(str(path)), load_radiograph(path), tmp_path_factory.mktemp("sr"))


def _text_values(item, name) -> list[str]:
    return [i.TextValue for i in hd.sr.utils.find_content_items(item, name=name, value_type="TEXT")]


def dsrdump(path) -> str:
    tool = shutil.which("dsrdump")
    if tool is None:
        pytest.fail("dsrdump is missing: install the Debian package dcmtk (packaging/linux-sysdeps.sh does, as root)")
    done = subprocess.run([tool, "-v", str(path)], capture_output=True, text=True, timeout=60)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "Error" not in output and not any(line.startswith(("E:", "F:")) for line in output.splitlines()), output
    return done.stdout


def test_file_name_is_the_sop_instance_uid_and_no_patient_data(sr_file, study):
    ds = pydicom.dcmread(sr_file)
    assert sr_file.name == f"{ds.SOPInstanceUID}.dcm"
    assert "Test" not in sr_file.name and "TEST-0001" not in str(sr_file)
    assert not list(sr_file.parent.glob("*.part"))


def test_pydicom_reads_back_the_same_values(sr_file, study):
    _, source = study
    ds = pydicom.dcmread(sr_file)
    assert ds.SOPClassUID == ComprehensiveSRStorage and ds.Modality == "SR"
    assert ds.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    # Patient and study copied from the source image.
    for keyword in ("PatientName", "PatientID", "StudyInstanceUID", "AccessionNumber", "StudyID"):
        assert ds[keyword].value == source[keyword].value, keyword
    assert ds.PatientBirthDate == "" and ds.PatientSex == ""  # absent in the source: empty Type 2
    assert DEMO_MARK in ds.SeriesDescription
    evidence = ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert evidence.ReferencedSOPInstanceUID == source.SOPInstanceUID

    scoords = hd.sr.utils.find_content_items(ds, value_type="SCOORD", recursive=True)
    assert len(scoords) == 2
    for scoord, (x1, y1, x2, y2) in zip(scoords, BOXES, strict=True):
        assert scoord.GraphicType == "POLYLINE"
        points = np.asarray(scoord.GraphicData, dtype=float).reshape(-1, 2)
        assert points.tolist() == [[x1, y1], [x2, y1], [x2, y2], [x1, y2], [x1, y1]]  # closed: first = last
        image = scoord.ContentSequence[0].ReferencedSOPSequence[0]
        assert image.ReferencedSOPInstanceUID == source.SOPInstanceUID
        assert image.ReferencedSOPClassUID == source.SOPClassUID

    nums = hd.sr.utils.find_content_items(ds, value_type="NUM", recursive=True)
    values = {n.ConceptNameCodeSequence[0].CodeMeaning: [] for n in nums}
    for n in nums:
        values[n.ConceptNameCodeSequence[0].CodeMeaning].append(float(n.MeasuredValueSequence[0].NumericValue))
        assert n.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0].CodeValue == "1"
    assert values["Certainty of Finding"] == pytest.approx(SCORES, abs=1e-9)
    assert values["Probability"] == pytest.approx(list(_findings("x").probabilities.values()), abs=1e-9)


def test_highdicom_reads_back_the_same_values(sr_file, study):
    _, source = study
    findings = _findings("x")
    sr = hd.sr.srread(sr_file)
    assert isinstance(sr, hd.sr.ComprehensiveSR)
    report = sr.content
    assert isinstance(report, hd.sr.MeasurementReport)

    boxes = report.get_planar_roi_measurement_groups(referenced_sop_instance_uid=source.SOPInstanceUID)
    assert len(boxes) == 2
    for group, score, (x1, y1, x2, y2) in zip(boxes, SCORES, BOXES, strict=True):
        assert group.finding_type == OPACITY
        assert [site.value for site in group.finding_sites] == [codes.SCT.Lung]
        assert group.roi.graphic_type == hd.sr.GraphicTypeValues.POLYLINE
        np.testing.assert_allclose(group.roi.value, [[x1, y1], [x2, y1], [x2, y2], [x1, y2], [x1, y1]])
        (measurement,) = group.get_measurements(name=codes.DCM.CertaintyOfFinding)
        assert measurement.value == pytest.approx(score) and measurement.unit == codes.UCUM.NoUnits
        assert _text_values(group[0], codes.DCM.AlgorithmVersion) == [f"{package_version()}+demo"]
        parameters = _text_values(group[0], codes.DCM.AlgorithmParameters)
        assert "demo weights: yes" in parameters and any(DEMO_MARK in p for p in parameters)
        assert {"mode: distributed", "cut: 6", "wire: fp16"} <= set(parameters)
        assert "opacity detector" in _text_values(group[0], codes.DCM.AlgorithmName)[0]

    groups = report.get_image_measurement_groups(referenced_sop_instance_uid=source.SOPInstanceUID)
    assert len(groups) == len(CHESTXRAY14)
    for group, (name, probability) in zip(groups, findings.probabilities.items(), strict=True):
        assert group.finding_type == finding_code(name)
        (measurement,) = group.get_measurements(name=codes.DCM.Probability)
        assert measurement.value == pytest.approx(probability)
        parameters = _text_values(group[0], codes.DCM.AlgorithmParameters)
        assert f"weights: sha256:{SHA}" in parameters and "demo weights: no" in parameters and "cut: 7" in parameters
        assert _text_values(group[0], codes.DCM.AlgorithmVersion) == [f"{package_version()}+{SHA[:12]}"]
    # one chest radiograph was analysed; the source names no procedure of its own
    assert sr.ContentSequence and _procedure(sr) == ("36554-4", "LN", "XR Chest Single view")
    # Standard codes where PS3.16 has the concept, the declared private scheme elsewhere.
    assert finding_code("Effusion") == codes.SCT.PleuralEffusion
    assert finding_code("Hernia").scheme_designator == PRIVATE_SCHEME
    assert all(len(finding_code(name).value) <= 16 for name in CHESTXRAY14)
    assert [s.CodingSchemeDesignator for s in sr.CodingSchemeIdentificationSequence] == [PRIVATE_SCHEME]


def _procedure(sr) -> tuple[str, str, str]:
    [item] = [i for i in sr.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "121058"]  # Procedure reported
    code = item.ConceptCodeSequence[0]
    return code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning


def test_the_procedure_reported_is_the_sources_own_when_it_names_one(study, tmp_path):
    path, _ = study
    source = pydicom.dcmread(path)
    ordered = pydicom.Dataset()
    ordered.CodeValue, ordered.CodingSchemeDesignator, ordered.CodeMeaning = "RPID2474", "RADLEX", "XR Chest 2 views"
    source.ProcedureCodeSequence = [ordered]
    sr = pydicom.dcmread(write_sr(_findings(str(path)), source, tmp_path))
    assert _procedure(sr) == ("RPID2474", "RADLEX", "XR Chest 2 views")
    long_name = "A finding of other weights whose name is longer than a Code Meaning may be, sixty-four"
    assert len(finding_code(long_name).meaning) == 64  # (the whole SR was refused)


def test_dsrdump_parses_it(sr_file):
    text = dsrdump(sr_file)
    assert "Comprehensive SR" in text and "Imaging Measurement Report" in text
    assert "POLYLINE" in text and "Abnormal opacity" in text


def test_real_radiograph_analysed_then_exported(shared_cxr, tmp_path):
    from inference.analysis.analyzer import Analyzer, ModelChoice
    from inference.models.detector import DetectorConfig
    from inference.reports.structured_report import algorithm_names

    radiograph = load_radiograph(shared_cxr / "dicom/CR-MONO1-10-chest")  # no File Meta, no preamble
    analyzer = Analyzer(ModelChoice(detector=DetectorConfig(input_size=128, width_multiple=0.25, depth_multiple=0.33)))
    findings = analyzer.analyze(radiograph, with_heat_maps=False)
    path = write_sr(findings, radiograph, tmp_path / "out", model_names=algorithm_names(analyzer))
    assert path.parent == tmp_path / "out"

    sr = hd.sr.srread(path)
    header = radiograph.header
    assert sr.PatientID == header.get("PatientID", "") and sr.StudyInstanceUID == header.StudyInstanceUID
    groups = sr.content.get_image_measurement_groups(referenced_sop_instance_uid=header.SOPInstanceUID)
    read = {g.finding_type.meaning: g.get_measurements(name=codes.DCM.Probability)[0].value for g in groups}
    assert len(read) == len(findings.probabilities)
    for name, probability in findings.probabilities.items():
        assert read[finding_code(name).meaning] == pytest.approx(probability, abs=1e-9)
    assert len(sr.content.get_planar_roi_measurement_groups()) == len(findings.detections)
    assert _text_values(groups[0][0], codes.DCM.AlgorithmName) == [algorithm_names(analyzer)["classifier"]]
    assert "128 px" in algorithm_names(analyzer)["detector"]  # the configuration that ran, not the default
    assert DEMO_MARK in sr.SeriesDescription  # demo weights are evident in the SR itself
    dsrdump(path)


def test_non_dicom_input_is_refused_with_a_clear_error(shared_cxr, tmp_path):
    png = tmp_path / "chest.png"
    cv2.imwrite(str(png), gradient(rows=64, columns=64, bits=8))
    radiograph = load_radiograph(png)
    assert radiograph.header is None
    with pytest.raises(ValueError, match="a DICOM SR needs a DICOM source image"):
        write_sr(_findings(str(png)), radiograph, tmp_path / "out")
    with pytest.raises(StructuredReportError, match="a DICOM SR needs a DICOM source image"):
        read_source_header(png)
    assert not (tmp_path / "out").exists()


def test_source_without_uids_and_bad_type2_values(study, tmp_path):
    _, header = study
    odd = header.copy()
    odd.PatientSex = "male"          # not M/F/O: highdicom would refuse the whole SR
    odd.PatientBirthDate = "19xx0101"
    ds = build_sr(_findings("x", demo_detector=False), odd)
    assert ds.PatientSex == "" and ds.PatientBirthDate == ""
    assert "DEMO" not in ds.SeriesDescription  # both models ran with real (SHA-256) weights
    del odd.SOPInstanceUID
    with pytest.raises(StructuredReportError, match="SOPInstanceUID"):
        build_sr(_findings("x"), odd)


def test_gui_export_dicom_sr(qtbot, window, shared_cxr, tmp_path, monkeypatch):
    from PySide6.QtWidgets import QFileDialog

    open_and_wait(qtbot, window, shared_cxr / "dicom/CR-MONO1-10-chest")
    window.update_sr_action()
    assert not window.sr_action.isEnabled()  # nothing to report before an analysis
    window.studies.set_findings(window.current, _findings(window.current))
    window.update_sr_action()
    assert window.sr_action.isEnabled()

    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *args, **kwargs: str(tmp_path / "sr"))
    window.sr_action.trigger()  # File → Export DICOM SR…
    (written,) = (tmp_path / "sr").glob("*.dcm")
    assert str(written) in window.statusBar().currentMessage()
    sr = hd.sr.srread(written)
    assert sr.content.get_planar_roi_measurement_groups(
        referenced_sop_instance_uid=window.studies.current_study.radiograph.header.SOPInstanceUID)


def test_gui_export_dicom_sr_of_a_png_says_why(qtbot, window, shared_cxr, tmp_path):
    png = shared_cxr / "raster/txv_nih_00027426_000_512px.png"
    open_and_wait(qtbot, window, png)
    window.studies.set_findings(window.current, _findings(window.current))
    assert window.export_sr(str(tmp_path / "sr")) is None
    assert "a DICOM SR needs a DICOM source image" in window.statusBar().currentMessage()
    assert not (tmp_path / "sr").exists()


def test_infer_sr_writes_one_sr_per_dicom_study(shared_cxr, tmp_path, monkeypatch, capsys):
    import json

    from app import cli
    from app.cli import common
    from inference.analysis.analyzer import ModelChoice
    from inference.models.detector import DetectorConfig

    small = ModelChoice(detector=DetectorConfig(input_size=128, width_multiple=0.25, depth_multiple=0.33))
    monkeypatch.setattr(common, "model_choice", lambda args, runtime=None: small)  # the --sr wiring, not the model
    dicom, png = shared_cxr / "dicom/CR-MONO1-10-chest", shared_cxr / "raster/txv_nih_00027426_000_512px.png"
    assert cli.main(["infer", str(dicom), str(png), "--sr", str(tmp_path / "sr")]) == 0
    first, second = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert first["path"] == str(dicom) and "sr_error" not in first
    assert [str(p) for p in (tmp_path / "sr").iterdir()] == [first["sr"]]
    sr = pydicom.dcmread(first["sr"])
    assert sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0] \
        .ReferencedSOPInstanceUID == read_source_header(dicom).SOPInstanceUID
    assert second["path"] == str(png) and "sr" not in second
    assert second["sr_error"] == "a DICOM SR needs a DICOM source image"


# ------------------------------------------------------------------ the annotated view as a Secondary Capture image


def test_the_annotated_view_is_a_secondary_capture_of_the_same_study_marked_as_ai_output(study, tmp_path):
    path, _ = study
    header = pydicom.dcmread(path, stop_before_pixels=True)  # as on disk (another test edits the fixture's copy)
    radiograph = load_radiograph(path)
    findings = _findings(path)
    written = write_secondary_capture(findings, radiograph, tmp_path, view=View(confidence=0.5))
    image = pydicom.dcmread(written)
    assert written.name == f"{image.SOPInstanceUID}.dcm"
    assert image.SOPClassUID == SecondaryCaptureImageStorage and image.Modality == "OT"
    for keyword in ("PatientID", "PatientName", "StudyInstanceUID", "AccessionNumber"):
        assert image[keyword].value == header[keyword].value
    assert image.SeriesInstanceUID != header.SeriesInstanceUID  # a series of its own
    assert (list(image.ImageType), image.BurnedInAnnotation, image.ConversionType) == (
        ["DERIVED", "SECONDARY"], "YES", "WSD")
    assert DEMO_MARK in image.SeriesDescription and DEMO_MARK in image.ImageComments
    [source] = image.SourceImageSequence
    assert source.ReferencedSOPInstanceUID == header.SOPInstanceUID
    from inference.analysis.analyzer import NotAChestRadiograph, check_in_scope
    with pytest.raises(NotAChestRadiograph, match="annotated copy of AI results"):  # (it was analysed as an OT)
        check_in_scope(load_radiograph(written))
    pixels = image.pixel_array
    assert image.PhotometricInterpretation == "RGB" and pixels.shape[1:] == (180, 3)
    band = pixels.shape[0] - 200  # the text above the radiograph, which is below it unchanged but for the box
    assert band > 0 and np.array_equal(pixels[band:, :, 0][150:, :], render_8bit(radiograph)[150:, :])
    shown, hidden = BOXES[0], BOXES[1]  # scores 0.91 and 0.47: only the first is at or above 0.5
    x1, y1, x2, y2 = (round(v) for v in shown)
    edge = pixels[band + (y1 + y2) // 2, x1]
    assert tuple(edge) == BOX_COLOUR
    middle = pixels[band + round((hidden[1] + hidden[3]) / 2), round(hidden[2])]
    assert middle[0] == middle[1] == middle[2]  # grey: no box drawn there


def test_an_annotated_view_without_dicom_source_says_why(shared_cxr):
    png = load_radiograph(shared_cxr / "raster" / sorted(p.name for p in (shared_cxr / "raster").glob("*.png"))[0])
    with pytest.raises(StructuredReportError, match="needs a DICOM source image"):
        build_secondary_capture(_findings(png.path), png)


def test_a_derived_sr_uid_names_one_content_and_keeps_its_series(study, tmp_path):
    """`listen` derives its SR's UID so that a study analysed again after a crash rewrites the same SR: the same
    results give the same UID, in the same series; other results (other weights) another UID (one UID named two
    contents: only the image's UID went in)."""
    from dataclasses import replace

    from inference.reports.structured_report import result_uid

    path, _ = study
    header = pydicom.dcmread(path, stop_before_pixels=True)  # as on disk (another test edits the fixture's copy)
    findings = _findings(str(path))
    uid = result_uid(header.SOPInstanceUID, findings)
    assert result_uid(header.SOPInstanceUID, _findings(str(path))) == uid
    retrained = replace(findings, models={**findings.models, ModelKind.DETECTOR: ModelRun(SHA, 6)})
    assert result_uid(header.SOPInstanceUID, retrained) != uid
    first, again = (pydicom.dcmread(write_sr(findings, header, tmp_path / name, sop_instance_uid=uid))
                    for name in ("first", "again"))
    assert first.SOPInstanceUID == again.SOPInstanceUID == uid
    assert first.SeriesInstanceUID == again.SeriesInstanceUID != header.SeriesInstanceUID
    tracking = [[e.value for e in sr.iterall() if e.keyword == "UID"] for sr in (first, again)]
    assert tracking[0] == tracking[1] and len(set(tracking[0])) > 10  # the groups' Tracking UIDs, the same too
    fell_back = replace(findings, mode=Mode.LOCAL_FALLBACK, fallback_reason="edge unreachable")
    assert result_uid(header.SOPInstanceUID, fell_back) != uid  # the same numbers, made otherwise: said in the SR


def test_the_device_observer_is_this_installation(study, tmp_path, monkeypatch):
    """The SR's Device Observer UID is made once per installation (data folder) and kept (every installation had
    the same one)."""
    from inference.reports.structured_report import device_uid

    path, _ = study
    uids = []
    for installation in ("a", "a", "b"):
        monkeypatch.setenv("MEDEDGE_DATA_DIR", str(tmp_path / installation))
        sr = hd.sr.srread(write_sr(_findings(str(path)), load_radiograph(path), tmp_path / "sr" / installation))
        [observer] = [i for i in sr.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "121012"]
        uids.append(observer.UID)
        assert observer.UID == device_uid()
    assert uids[0] == uids[1] != uids[2]
