"""AI results as a DICOM Comprehensive SR: a TID 1500 Measurement Report written with highdicom.

One planar-ROI measurement group (TID 1410) per detected opacity — the box as a closed POLYLINE in the
source image's pixels, its score as "Certainty of Finding" — and one measurement group (TID 1501) per
classifier finding with its probability. Every group carries the algorithm identification (TID 4019):
model, package version, weights (SHA-256 or demo), mode and cut. Patient and study attributes come from
the source image (highdicom copies them from the evidence); no PHI goes into the file name.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import os
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from copy import deepcopy
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

import highdicom as hd
import numpy as np
import pydicom
from highdicom.coding_schemes import CodingSchemeIdentificationItem
from pydicom.charset import convert_encodings
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid
from pydicom.valuerep import DA, TM

from inference.config import MANUFACTURER, ModelKind
from inference.models.findings import Findings
from inference.models.weights import data_dir

if TYPE_CHECKING:
    from viewer.radiograph import Radiograph

DEMO_MARK = "DEMO WEIGHTS - NOT FOR DIAGNOSIS"  # ASCII: the source's character set may be the default one
SERIES_DESCRIPTION = "MedEdge AI results"
SERIES_NUMBER = 990  # after the acquisition's own series in a PACS listing

# Documented DICOM/SNOMED concepts (PS3.16; the values come from pydicom's copy of its tables):
# a detection is an "Abnormal opacity" (CID 6101 Chest Finding or Feature) whose finding site is the lung.
OPACITY = Code("112033", "DCM", "Abnormal opacity")
LUNG = codes.SCT.Lung                       # 39607008
CERTAINTY = codes.DCM.CertaintyOfFinding    # 111012: the detector's confidence for the box
PROBABILITY = codes.DCM.Probability         # 122157: the classifier's output for a finding
UNITLESS = codes.UCUM.NoUnits               # UCUM "1": scores and probabilities in [0, 1]
# Procedure Reported when the source names none of its own: one chest radiograph was analysed (LOINC "XR Chest
# Single view", as IHE's Imaging Diagnostic Report codes it; CID 100 is extensible, its only XR code is "unspecified
# body region")
CHEST_SINGLE_VIEW = Code("36554-4", "LN", "XR Chest Single view")

# ChestX-ray14 findings. Where PS3.16 has the same concept it is used; the rest have no code we can vouch
# for, so they get a private scheme (declared in the file) rather than a guessed SNOMED code.
PRIVATE_SCHEME = "99MEDEDGE"
_STANDARD_FINDINGS: dict[str, Code] = {
    "Effusion": codes.SCT.PleuralEffusion,   # ChestX-ray14 "Effusion" is pleural effusion
    "Pneumothorax": codes.SCT.Pneumothorax,
    "Mass": codes.SCT.Mass,
    "Nodule": codes.SCT.Nodule,
    "Infiltration": codes.DCM.Infiltrate,
    "Edema": codes.SCT.PulmonaryEdema,
}
_PRIVATE_FINDINGS = {  # code values are SH: at most 16 characters
    "Atelectasis": "ATELECTASIS", "Cardiomegaly": "CARDIOMEGALY", "Consolidation": "CONSOLIDATION",
    "Emphysema": "EMPHYSEMA", "Fibrosis": "FIBROSIS", "Pleural_Thickening": "PLEURALTHICK", "Hernia": "HERNIA",
    "Pneumonia": "PNEUMONIA"}

# Type 2 attributes highdicom reads from the evidence without a default: empty when the source lacks them.
_TYPE2_PATIENT_STUDY = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber",
                        "StudyID", "StudyDate", "StudyTime", "ReferringPhysicianName")
_REQUIRED_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")


class StructuredReportError(ValueError):
    """The SR cannot be made; the message is one line for the status bar or the JSON record."""


def finding_code(name: str) -> Code:
    """The code of a classifier finding: the standard one, or a private code (value ≤ 16 characters, SH)."""
    if name in _STANDARD_FINDINGS:
        return _STANDARD_FINDINGS[name]
    if name in _PRIVATE_FINDINGS:
        value = _PRIVATE_FINDINGS[name]
    else:  # a finding from other weights: stable, short, and still readable through its meaning
        value = "X-" + hashlib.sha256(name.encode()).hexdigest()[:12].upper()
    return Code(value, PRIVATE_SCHEME, name.replace("_", " ")[:64])  # Code Meaning is LO: at most 64 characters


class MadeBy(TypedDict):
    instance_number: int
    manufacturer: str
    manufacturer_model_name: str
    software_versions: str


def made_by_us() -> MadeBy:
    """What highdicom's constructors take to say who made an object (the one instance of its series)."""
    return MadeBy(instance_number=1, manufacturer=MANUFACTURER, manufacturer_model_name="MedEdge Viewer",
                  software_versions=package_version())


def package_version() -> str:
    try:
        return importlib.metadata.version("mededge-viewer")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "0+unknown"


@contextmanager
def copied_as_they_are() -> Iterator[None]:
    """The source's values go into a report as they are, without pydicom's and highdicom's warnings on the user's
    terminal: anonymised sources often hold one-component names and identifiers longer than their VR allows (a
    56-character accession number), and the report must carry them unchanged to be matched with its study."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name")
        warnings.filterwarnings("ignore", message=r"The value length \(\d+\) exceeds the maximum length")
        yield


def evidence_of(source: Dataset) -> Dataset:
    """A copy of the source header that highdicom accepts as evidence (missing Type 2 values empty)."""
    with copied_as_they_are():
        return _evidence_of(source)


def _evidence_of(source: Dataset) -> Dataset:
    missing = [k for k in _REQUIRED_UIDS if not str(source.get(k, "") or "").strip()]
    if missing:
        raise StructuredReportError(f"the source image has no {', '.join(missing)}: a result cannot reference it")
    if str(source.get("Modality", "")).upper() == "SR":
        raise StructuredReportError("the source is itself a structured report, not an image")
    evidence = deepcopy(source)
    _name_the_default_repertoire(evidence)
    for keyword in _TYPE2_PATIENT_STUDY:
        if keyword not in evidence or evidence[keyword].value is None:
            setattr(evidence, keyword, "")
    sex = str(evidence.PatientSex).strip().upper()
    evidence.PatientSex = sex if sex in ("M", "F", "O") else ""  # highdicom refuses any other value
    for keyword, kind in (("PatientBirthDate", DA), ("StudyDate", DA), ("StudyTime", TM)):
        try:
            kind(str(evidence[keyword].value)) if str(evidence[keyword].value) else None
        except ValueError:
            setattr(evidence, keyword, "")  # an unreadable date would make highdicom fail the whole SR
    return evidence


def _name_the_default_repertoire(evidence: Dataset) -> None:
    """Specific Character Set as highdicom takes it, meaning the same: the default repertoire is no value when alone
    and "ISO 2022 IR 6" before code extensions (a Japanese "\\ISO 2022 IR 87" made the SR fail: "'' is not a valid
    SpecificCharacterSetValues")."""
    declared = evidence.get("SpecificCharacterSet", None)
    if declared is None:
        return
    terms = [str(term).strip() for term in (declared if isinstance(declared, (list, tuple, MultiValue)) else [declared])]
    if all(term in ("", "ISO_IR 6") for term in terms):
        del evidence.SpecificCharacterSet
    elif len(terms) > 1:
        evidence.SpecificCharacterSet = ["ISO 2022 IR 6" if term in ("", "ISO_IR 6") else term for term in terms]


def _algorithm(model: ModelKind, findings: Findings, names: Mapping[ModelKind, str]) -> hd.sr.AlgorithmIdentification:
    run = findings.models.get(model)
    weights = run.weights if run is not None else None
    demo = weights == "demo"
    if weights is None:
        described, demo_answer = "not recorded", "unknown"
    else:
        described, demo_answer = (f"demo (untrained, {DEMO_MARK})", "yes") if demo else (f"sha256:{weights}", "no")
    parameters = [
        f"weights: {described}",
        f"demo weights: {demo_answer}",
        f"mode: {findings.mode.value}",
    ]
    if run is not None:
        parameters.append(f"cut: {run.cut}")
        if run.bands:
            parameters.append(f"spatial split: {run.bands} bands")
        if run.wire is not None:
            parameters.append(f"wire: {run.wire.value}")
        parameters.append(f"runtime: {run.runtime.value}")
    if findings.fallback_reason:
        parameters.append(f"fallback: {findings.fallback_reason}"[:1024])  # UT holds more; keep items short
    # the weights in the version too, where software reads them (the parameters are free text): 0.1.0+demo
    version = package_version() if weights is None else f"{package_version()}+{'demo' if demo else weights[:12]}"
    return hd.sr.AlgorithmIdentification(name=names[model], version=version, parameters=parameters,
                                         manufacturer=MANUFACTURER)


def _closed_box(box_xyxy) -> np.ndarray:
    """The box as a closed 5-point polyline in (column, row) image pixels: the first point repeated last.

    Both the detector and DICOM SCOORD put 0.0 at the top-left corner of the first pixel, so the box's
    continuous pixel coordinates go in unchanged.
    """
    x1, y1, x2, y2 = (float(v) for v in box_xyxy)
    return np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2], [x1, y1]], dtype=np.float32)


def algorithm_names(analyzer=None) -> dict[ModelKind, str]:
    """Model names for TID 4019, from an `Analyzer`'s configuration when given (duck-typed: no torch here)."""
    detector, size, crops = "yolov4-p5", 512, ""
    if analyzer is not None:
        detector, size = analyzer.detector.config.architecture, analyzer.detector.config.input_size
        crops = ", ten-crop" if analyzer.classifier.config.ten_crop else ""
    return {ModelKind.DETECTOR: f"MedEdge lung opacity detector (Scaled-YOLOv4 {detector.upper()}, {size} px)",
            ModelKind.CLASSIFIER: f"MedEdge chest findings classifier (CheXNet DenseNet-121{crops})"}


def build_sr(findings: Findings, source: Dataset | None, *, model_names: Mapping[ModelKind, str] | None = None,
             sop_instance_uid: str | None = None) -> hd.sr.ComprehensiveSR:
    """A Comprehensive SR (TID 1500) of `findings` on the image whose header is `source`.

    Comprehensive SR (not 3D) because the regions are 2D image coordinates (SCOORD) on one radiograph.
    `model_names`: "detector"/"classifier" → algorithm name (default `algorithm_names()`).
    """
    if source is None:
        raise StructuredReportError("a DICOM SR needs a DICOM source image")
    if not findings.detections and not findings.probabilities:
        raise StructuredReportError("the analysis has no results to report")
    evidence = evidence_of(source)
    try:
        with copied_as_they_are():
            return _build(findings, evidence, {**algorithm_names(), **(model_names or {})}, sop_instance_uid)
    except StructuredReportError:
        raise
    except (ValueError, TypeError, AttributeError, KeyError) as exc:  # highdicom refused a value of the source
        raise StructuredReportError(f"cannot build the DICOM SR: {exc}") from exc


def _build(findings: Findings, evidence: Dataset, names: Mapping[ModelKind, str],
           sop_instance_uid: str | None) -> hd.sr.ComprehensiveSR:
    # the loader analyses the first frame only; a frame count it could not read (e.g. "1A") may hide several
    single = str(evidence.get("NumberOfFrames", 1) or 1).strip() == "1"
    frame_numbers = None if single else [1]

    groups: list = []
    for index, detection in enumerate(findings.detections, start=1):
        region = hd.sr.ImageRegion(
            graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
            graphic_data=_closed_box(detection.box_xyxy),
            source_image=hd.sr.SourceImageForRegion(evidence.SOPClassUID, evidence.SOPInstanceUID,
                                                    referenced_frame_numbers=frame_numbers))
        score = hd.sr.Measurement(name=CERTAINTY, value=float(detection.score), unit=UNITLESS)
        groups.append(hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=_tracking_uid(sop_instance_uid, len(groups)),
                                                         identifier=f"Opacity {index}"),
            referenced_region=region,
            finding_type=OPACITY,
            finding_sites=[hd.sr.FindingSite(LUNG)],
            algorithm_id=_algorithm(ModelKind.DETECTOR, findings, names),
            measurements=[score]))
    for name, probability in findings.probabilities.items():
        groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=_tracking_uid(sop_instance_uid, len(groups)),
                                                         identifier=name.replace("_", " ")),
            finding_type=finding_code(name),
            algorithm_id=_algorithm(ModelKind.CLASSIFIER, findings, names),
            measurements=[hd.sr.Measurement(name=PROBABILITY, value=float(probability), unit=UNITLESS)],
            source_images=[hd.sr.SourceImageForMeasurementGroup(evidence.SOPClassUID, evidence.SOPInstanceUID,
                                                                referenced_frame_numbers=frame_numbers)]))

    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=device_uid(),  # this installation's: a reader can tell which workstation made the report
            name="MedEdge Viewer", manufacturer_name=MANUFACTURER, model_name="MedEdge Viewer"))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=procedure_of(evidence),
        imaging_measurements=groups)

    description = SERIES_DESCRIPTION + (f" - {DEMO_MARK}" if findings.demo_weights else "")
    private = CodingSchemeIdentificationItem(
        designator=PRIVATE_SCHEME, name="MedEdge ChestX-ray14 findings without a DICOM/SNOMED code in PS3.16",
        responsible_organization=MANUFACTURER) if _uses_private_codes(findings) else None
    return hd.sr.ComprehensiveSR(
        evidence=[evidence],
        content=report[0],
        series_instance_uid=series_uid(sop_instance_uid),
        series_number=SERIES_NUMBER,
        sop_instance_uid=sop_instance_uid or generate_uid(),
        **made_by_us(),
        series_description=description,
        is_complete=True,   # every result of the analysis is in it
        is_final=False,     # machine output, not verified by a reader
        is_verified=False,
        coding_schemes=[private] if private is not None else None)


def procedure_of(source: Dataset) -> Code:
    """The procedure the analysed image belongs to: the source's own Procedure Code when it has a whole one (the
    order's, from the RIS), else one chest radiograph."""
    for item in source.get("ProcedureCodeSequence", None) or []:
        value, scheme, meaning = (str(item.get(k, "") or "").strip()
                                  for k in ("CodeValue", "CodingSchemeDesignator", "CodeMeaning"))
        if value and scheme and meaning:
            return Code(value, scheme, meaning[:64])
    return CHEST_SINGLE_VIEW


def device_uid() -> str:
    """This installation's Device Observer UID, made once and kept in the data folder (every installation had the
    same one, derived from the product's name); read once per folder and process (each SR asked for it twice)."""
    return _device_uid_in(data_dir())


@functools.cache
def _device_uid_in(folder: Path) -> str:
    path = folder / "device-observer-uid"
    try:
        uid = path.read_text().strip()
        if uid and len(uid) <= 64 and all(part.isdigit() for part in uid.split(".")):
            return uid
    except OSError:
        pass
    uid = generate_uid()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(uid + "\n")
    except OSError:  # a read-only data folder: this process keeps the one it made
        pass
    return uid


# Body parts that come in pairs (General Series' Laterality is then required): those a radiograph meets
_PAIRED = frozenset({"BREAST", "SHOULDER", "ELBOW", "WRIST", "HAND", "HIP", "KNEE", "ANKLE", "FOOT", "EYE", "EAR"})


def carry_series_anatomy(source: Dataset, result: Dataset) -> None:
    """A result's General Series body part (the source's, else the chest that was analysed), which answers the
    module's Laterality condition (the chest is not a paired part), and the source's laterality where it has one."""
    part = str(source.get("BodyPartExamined", "") or "").strip()
    result.BodyPartExamined = part or "CHEST"
    laterality = str(source.get("Laterality", "") or "").strip()
    if not laterality and part.upper() in _PAIRED:  # the image's, where a paired part needs the series' too
        laterality = str(source.get("ImageLaterality", "") or "").strip()
    if laterality in ("R", "L"):  # (Image Laterality's B and U have no series equivalent)
        result.Laterality = laterality


def result_uid(source_uid: str, findings: Findings) -> str:
    """The SR's UID for `findings` on the image `source_uid`: the same for the same results (a study analysed again
    after a crash rewrites, and sends again, the same SR), another for other results (other weights, another
    runtime's numbers) — one UID never names two contents."""
    # everything the SR says of how it was made too (the algorithm parameters), not its timings
    how = {kind.value: [run.weights, run.cut, run.runtime.value, run.wire and run.wire.value, run.bands]
           for kind, run in sorted(findings.models.items())}
    content = json.dumps([how, findings.mode.value, findings.fallback_reason, package_version(), device_uid(),
                          [(d.label, round(d.score, 6), [round(v, 3) for v in d.box_xyxy]) for d in findings.detections],
                          {name: round(p, 6) for name, p in sorted(findings.probabilities.items())}])
    return generate_uid(entropy_srcs=[source_uid, "mededge sr", content])


def _tracking_uid(sop_instance_uid: str | None, index: int) -> str:
    """A measurement group's Tracking UID: derived from a derived SR's own (the same SR rewritten is the same),
    else new."""
    return generate_uid(entropy_srcs=[sop_instance_uid, "tracking", str(index)]) if sop_instance_uid \
        else generate_uid()


def series_uid(sop_instance_uid: str | None) -> str:
    """A result's series: derived from its own UID when that is derived (the same SR sent again stays in its
    series: one instance in two series confuses a PACS), else new."""
    return generate_uid(entropy_srcs=[sop_instance_uid, "series"]) if sop_instance_uid else generate_uid()


def _uses_private_codes(findings: Findings) -> bool:
    return any(finding_code(name).scheme_designator == PRIVATE_SCHEME for name in findings.probabilities)


def write_sr(findings: Findings, source: Radiograph | Dataset | None, folder: str | os.PathLike[str],
             **options) -> Path:
    """Write the SR into `folder` (created if needed) as `<SOP Instance UID>.dcm`; returns its path.

    `source`: the analysed `Radiograph` (its `.header`), or the header itself. A PNG/JPEG/TIFF has none.
    """
    header = source if isinstance(source, Dataset) or source is None else source.header
    return save_into(build_sr(findings, header, **options), folder)


def save_into(dataset: Dataset, folder: str | os.PathLike[str]) -> Path:
    """Write `dataset` into `folder` (created if needed) as `<SOP Instance UID>.dcm`; returns its path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not _holds_its_text(dataset):
        # text of our own (an edge's error, a finding named by other weights) the source's character set lacks: in
        # UTF-8 rather than '?' (pydicom's replacement) or bytes the declared repertoire does not have
        dataset.SpecificCharacterSet = "ISO_IR 192"
    path = folder / f"{dataset.SOPInstanceUID}.dcm"  # UIDs only: never patient data in a file name
    partial = path.with_suffix(".dcm.part")
    try:
        dataset.save_as(partial, enforce_file_format=True)
        os.replace(partial, path)  # a reader (PACS import folder) never sees half a file
    finally:
        partial.unlink(missing_ok=True)
    return path


_TEXT_VRS = frozenset({"SH", "LO", "ST", "LT", "UT", "UC", "PN"})


def _holds_its_text(dataset: Dataset) -> bool:
    """Whether every text value of `dataset` (nested ones too) is in the repertoire its Specific Character Set
    declares: ASCII without one (pydicom would write Latin-1 bytes there); with several (ISO 2022), each character
    in one of them."""
    declared = dataset.get("SpecificCharacterSet", "") or ""
    terms = [str(term).strip() for term in (declared if isinstance(declared, (list, tuple, MultiValue)) else [declared])]
    # the default repertoire, alone or as ISO 2022's first term, is ASCII (pydicom encodes it as Latin-1)
    codecs = ["ascii" if term in ("", "ISO_IR 6", "ISO 2022 IR 6") else convert_encodings(term)[0]
              for term in terms or [""]]

    def fits(character: str) -> bool:
        for codec in codecs:
            try:
                character.encode(codec)
                return True
            except UnicodeError:
                continue
        return False

    for element in dataset.iterall():
        if element.VR in _TEXT_VRS and element.value:
            values = element.value if isinstance(element.value, (list, tuple, MultiValue)) else [element.value]
            if not all(fits(character) for value in values for character in str(value)):
                return False
    return True


def read_source_header(path: str | os.PathLike[str]) -> Dataset:
    """The DICOM header of an analysed file (no pixel data), for writing its SR after the fact.

    Files without a preamble are read too (like the loader); anything that is not a DICOM image raises
    `StructuredReportError`.
    """
    try:
        header = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    except Exception as exc:  # pydicom raises many types on non-DICOM bytes
        raise StructuredReportError("a DICOM SR needs a DICOM source image") from exc
    if "SOPInstanceUID" not in header or "Rows" not in header:
        raise StructuredReportError("a DICOM SR needs a DICOM source image")
    return header
