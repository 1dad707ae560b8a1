"""What the product writes, checked against the DICOM standard by a validator of its own: dicom3tools' `dciodvfy`
(each object against its IOD's modules) and `dcentvfy` (the patient and study the same in every object of a study).

Real radiographs analysed with a small detector, their SR and annotated image (Secondary Capture) written as
`infer --sr --annotated-image` writes them. The one error allowed is the source's own: an accession number
longer than its VR allows, which the results must carry unchanged to be filed with their study.
"""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pydicom
import pytest
from pydicom.valuerep import DA, TM

from inference.models.detector import DetectorConfig
from inference.reports.secondary_capture import write_secondary_capture
from inference.reports.structured_report import algorithm_names, write_sr
from viewer.loader import load_radiograph

SOURCES = ("dicom/DX_chest_966_fixed.dcm",  # JPEG 2000 lossless, MONOCHROME1, 56-character accession number
           "dicom/CR-MONO1-10-chest",       # no File Meta, no preamble, no body part
           "dicom/RG1_J2KI.dcm")            # JPEG 2000 lossy: LossyImageCompression 01, ratio 10
THE_SOURCES_OWN = ("AccessionNumber", "Accession Number")  # (as dciodvfy names it, in either of its forms)
PATIENT_AND_STUDY = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "PatientAge", "StudyInstanceUID",
                     "StudyDate", "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName",
                     "StudyDescription")
# small and fast; a low threshold so the SR holds boxes (the demo detector finds none at the usual one)
TINY = DetectorConfig(input_size=128, width_multiple=0.25, depth_multiple=0.33, confidence=0.01)


DATES = {"PatientBirthDate": DA, "StudyDate": DA, "StudyTime": TM}


def _is_date(keyword: str, value: str) -> bool:
    try:
        DATES[keyword](value)
    except ValueError:
        return False
    return True


def _validator(name: str) -> str:
    tool = shutil.which(name)
    if tool is None:
        pytest.fail(f"{name} is missing: install the Debian package dicom3tools (packaging/linux-sysdeps.sh does, "
                    "as root)")
    return tool


def _errors(*command) -> list[str]:
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    return [line for line in (done.stdout + done.stderr).splitlines()
            if line.startswith("Error") and not any(said in line for said in THE_SOURCES_OWN)
            and "contains invalid data values" not in line]  # (its summary of the lines above)


@pytest.fixture(scope="module")
def written(shared_cxr, tmp_path_factory):
    from inference.analysis.analyzer import Analyzer, ModelChoice

    analyzer = Analyzer(ModelChoice(detector=TINY))
    folder = tmp_path_factory.mktemp("results")
    objects = {}
    for name in SOURCES:
        radiograph = load_radiograph(shared_cxr / name)
        findings = analyzer.analyze(radiograph, with_heat_maps=False)
        objects[name] = (shared_cxr / name, write_sr(findings, radiograph, folder / "sr",
                                                     model_names=algorithm_names(analyzer)),
                         write_secondary_capture(findings, radiograph, folder / "image"))
    return objects


@pytest.mark.parametrize("name", SOURCES)
def test_the_sr_and_the_annotated_image_pass_dciodvfy(written, name):
    _, sr, image = written[name]
    for path in (sr, image):
        assert _errors(_validator("dciodvfy"), str(path)) == [], path


@pytest.mark.filterwarnings("ignore:The value length")  # (the 56-character accession number, compared)
@pytest.mark.parametrize("name", SOURCES)
def test_the_results_keep_the_study_of_their_source(written, name):
    """The SR and the annotated image agree on the patient and the study (dcentvfy), and each carries every patient
    and study attribute its source has, unchanged (a PACS that refreshes a study from its latest instance would
    otherwise drop what a result lacks)."""
    source, sr, image = written[name]
    done = subprocess.run([_validator("dcentvfy"), str(sr), str(image)], capture_output=True, text=True, timeout=120)
    output = done.stdout + done.stderr
    assert not [line for line in output.splitlines()
                if "present in one instance but not the other" in line or "Different values" in line], output
    original = pydicom.dcmread(source, stop_before_pixels=True, force=True)
    for result in (sr, image):
        copy = pydicom.dcmread(result, stop_before_pixels=True)
        for keyword in PATIENT_AND_STUDY:
            value = str(original.get(keyword, "") or "")
            if value:  # a date that is no date (an anonymiser's hash) goes in empty: highdicom refuses it
                expected = "" if keyword in DATES and not _is_date(keyword, value) else original.get(keyword)
                assert copy.get(keyword) == expected, (keyword, result)


def test_an_image_once_compressed_lossily_says_so_in_its_annotated_copy(written):
    source, _, image = written["dicom/RG1_J2KI.dcm"]
    original, copy = pydicom.dcmread(source, stop_before_pixels=True), pydicom.dcmread(image, stop_before_pixels=True)
    assert (original.LossyImageCompression, copy.LossyImageCompression) == ("01", "01")
    assert copy.LossyImageCompressionRatio == original.LossyImageCompressionRatio
    lossless = pydicom.dcmread(written["dicom/DX_chest_966_fixed.dcm"][2], stop_before_pixels=True)
    assert "LossyImageCompression" not in lossless  # JPEG 2000 lossless: nothing to say


@pytest.mark.parametrize("character_set", [None, "ISO_IR 100", ["", "ISO 2022 IR 87"]])
def test_text_of_our_own_outside_the_sources_character_set_is_written_in_utf8(shared_cxr, tmp_path, character_set):
    """An edge's error in the results, or a finding named by other weights, in characters the source's character set
    lacks: the SR says UTF-8 and keeps them (it wrote bytes the default repertoire lacks, or '?')."""
    from inference.config import ModelKind
    from inference.models.findings import Findings, Mode, ModelRun

    source = pydicom.dcmread(shared_cxr / "dicom/CR-MONO1-10-chest", force=True)
    if character_set == "ISO_IR 100":
        source.SpecificCharacterSet, source.PatientName = character_set, "Müller^Jürgen"
    elif character_set:  # Japanese: ASCII, then JIS X 0208 after an escape (é is in neither)
        source.SpecificCharacterSet, source.PatientName = character_set, "Yamada^Tarou=山田^太郎"
    reason = "edge a:8001 timed out — Triton said “model not ready” (queue delay 2000 µs)"
    findings = Findings(path="x", detections=(), probabilities={"Épanchement pleural": 0.7, "Effusion": 0.5},
                        models={ModelKind.CLASSIFIER: ModelRun("demo", 10)}, mode=Mode.LOCAL_FALLBACK,
                        fallback_reason=reason)
    path = write_sr(findings, source, tmp_path)
    assert _errors(_validator("dciodvfy"), str(path)) == []
    written = pydicom.dcmread(path)
    assert written.SpecificCharacterSet == "ISO_IR 192"
    assert str(written.PatientName) == str(source.PatientName)
    texts = [item.value for item in written.iterall() if item.keyword == "TextValue"]
    meanings = {item.value for item in written.iterall() if item.keyword == "CodeMeaning"}
    assert f"fallback: {reason}" in texts and "Épanchement pleural" in meanings


@pytest.mark.parametrize("magnification", [1.1, None])
def test_the_annotated_image_says_pixel_spacing_only_at_the_patient(shared_cxr, tmp_path, magnification):
    """The detector's spacing corrected for magnification goes in as Pixel Spacing marked GEOMETRY; the detector's
    alone stays out (it was written as Pixel Spacing, "at the patient", which it is not). Both pass dciodvfy."""
    from inference.config import ModelKind
    from inference.models.findings import Findings, Mode, ModelRun

    source = pydicom.dcmread(shared_cxr / "dicom/DX_chest_966_fixed.dcm")
    del source.PixelSpacing
    source.ImagerPixelSpacing = [0.16, 0.16]
    if magnification:
        source.EstimatedRadiographicMagnificationFactor = magnification
    path = tmp_path / "source.dcm"
    source.save_as(path)
    findings = Findings(path=str(path), detections=(), probabilities={"Effusion": 0.5},
                        models={ModelKind.CLASSIFIER: ModelRun("demo", 10)}, mode=Mode.LOCAL)
    radiograph = load_radiograph(path)
    image_path = write_secondary_capture(findings, radiograph, tmp_path / "out")
    assert _errors(_validator("dciodvfy"), str(image_path)) == []
    image = pydicom.dcmread(image_path, stop_before_pixels=True)
    if magnification:
        scale = image.Columns / radiograph.columns
        assert float(image.PixelSpacing[0]) == pytest.approx(0.16 / 1.1 / scale, rel=1e-4)
        assert image.PixelSpacingCalibrationType == "GEOMETRY"
    else:
        assert "PixelSpacing" not in image


@pytest.mark.parametrize("flips", [(False, False), (True, False), (False, True), (True, True)])
def test_the_reading_as_a_presentation_state(shared_cxr, tmp_path, flips):
    """A GSPS of the DX as read — window, MONOCHROME1 shown as it asks, rotated 90° and mirrored, two measurements —
    passes dciodvfy (which checks the displayed area's corners against the rotation and flip) and says it all: the
    viewer's flips before its rotation become DICOM's rotation and then one horizontal flip that show the same."""
    from inference.reports.presentation_state import Measurement, Reading, write_presentation_state

    source = pydicom.dcmread(shared_cxr / "dicom/DX_chest_966_fixed.dcm", stop_before_pixels=True)
    horizontal, vertical = flips
    reading = Reading(1800.0, 3000.0, True, "LINEAR", None, 90, horizontal, vertical,
                      (Measurement((100.0, 200.0), (400.0, 200.0), "48.0 mm"),
                       Measurement((50.0, 900.0), (1200.0, 950.0), "CTR 0.47 (heart 131 mm)")))
    path = write_presentation_state(reading, source, tmp_path)
    assert _errors(_validator("dciodvfy"), str(path)) == []
    state = pydicom.dcmread(path)
    assert state.SOPClassUID == "1.2.840.10008.5.1.4.1.1.11.1" and state.Modality == "PR"
    assert state.StudyInstanceUID == source.StudyInstanceUID
    [referenced] = state.ReferencedSeriesSequence[0].ReferencedImageSequence
    assert referenced.ReferencedSOPInstanceUID == source.SOPInstanceUID
    [voi] = state.SoftcopyVOILUTSequence
    assert (float(voi.WindowCenter), float(voi.WindowWidth)) == (1800.0, 3000.0)
    assert state.PresentationLUTShape == "INVERSE"
    # the same picture: DICOM turns clockwise, then flips; the viewer flips, then turns
    expected = {(False, False): ("N", 90), (True, False): ("Y", 270), (False, True): ("Y", 90),
                (True, True): ("N", 270)}[flips]
    assert (state.ImageHorizontalFlip, int(state.ImageRotation)) == expected
    [annotation] = state.GraphicAnnotationSequence
    lines = [list(map(float, g.GraphicData)) for g in annotation.GraphicObjectSequence]
    assert lines == [[100.0, 200.0, 400.0, 200.0], [50.0, 900.0, 1200.0, 950.0]]
    assert [t.UnformattedTextValue for t in annotation.TextObjectSequence] == ["48.0 mm", "CTR 0.47 (heart 131 mm)"]


def test_the_presentation_states_orientation_shows_what_the_viewer_shows():
    """Every rotation and flip of the viewer (flips, then a clockwise turn) against DICOM's (a clockwise turn, then
    a horizontal flip), on a small array: the same picture."""
    import itertools

    import numpy as np

    from inference.reports.presentation_state import dicom_orientation

    image = np.arange(12).reshape(3, 4)
    for rotation, horizontal, vertical in itertools.product((0, 90, 180, 270), (False, True), (False, True)):
        viewer = image[::-1 if vertical else 1, ::-1 if horizontal else 1]
        viewer = np.rot90(viewer, -rotation // 90)  # (clockwise)
        turned, flipped = dicom_orientation(rotation, horizontal, vertical)
        dicom = np.rot90(image, -turned // 90)
        dicom = dicom[:, ::-1] if flipped else dicom
        assert np.array_equal(viewer, dicom), (rotation, horizontal, vertical)


def test_a_presentation_state_shows_the_files_own_voi_lut_and_function(shared_cxr, tmp_path):
    """Shown through the file's VOI LUT (a mammogram's), the presentation state carries that table, not the
    straight window over its range; a SIGMOID window says so."""
    from inference.reports.presentation_state import Reading, write_presentation_state

    radiograph = load_radiograph(shared_cxr / "other/fodicom_GH133_MG_VOILUTSeq.dcm")
    assert radiograph.voi_lut is not None
    window = radiograph.window
    path = write_presentation_state(Reading(window.center, window.width, radiograph.inverted, "LINEAR",
                                            radiograph.voi_lut), radiograph.header, tmp_path / "lut")
    assert _errors(_validator("dciodvfy"), str(path)) == []
    [voi] = pydicom.dcmread(path).SoftcopyVOILUTSequence
    [table] = voi.VOILUTSequence
    assert int(table.LUTDescriptor[1]) == radiograph.voi_lut.first_mapped and "WindowCenter" not in voi
    entries = np.frombuffer(table.LUTData, dtype="<u2") if isinstance(table.LUTData, bytes) else np.asarray(
        table.LUTData)
    source = radiograph.voi_lut.data.astype(np.float64) / (2 ** radiograph.voi_lut.bits - 1)
    assert np.allclose(entries / 65535, source, atol=1e-4)  # the file's curve, at 16 bits
    path = write_presentation_state(Reading(window.center, window.width, radiograph.inverted, "SIGMOID"),
                                    radiograph.header, tmp_path / "sigmoid")
    [voi] = pydicom.dcmread(path).SoftcopyVOILUTSequence
    assert voi.VOILUTFunction == "SIGMOID" and float(voi.WindowWidth) == pytest.approx(window.width)
