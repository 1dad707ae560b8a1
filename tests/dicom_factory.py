"""Build DICOM test files with pydicom (and GDCM for the JPEG processes pydicom cannot encode)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"


def gradient(rows: int = 64, columns: int = 48, bits: int = 12, seed: int = 0) -> np.ndarray:
    """A smooth image with noise: exercises every codec without being trivially compressible."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:rows, :columns]
    top = 2**bits - 1
    base = (xx / max(columns - 1, 1) * 0.6 + yy / max(rows - 1, 1) * 0.4) * top
    noisy = base + rng.normal(0, top * 0.02, size=base.shape)
    dtype = np.uint8 if bits <= 8 else np.uint16
    return np.clip(np.rint(noisy), 0, top).astype(dtype)


def dataset(pixels: np.ndarray, *, bits_stored: int | None = None, photometric: str = "MONOCHROME2",
            modality: str = "DX", sop_class: str = DX_FOR_PRESENTATION, signed: bool = False,
            transfer_syntax: str = ExplicitVRLittleEndian, **attributes) -> Dataset:
    """A minimal valid image data set around `pixels` (2-D grey, or rows×cols×3 RGB)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = modality
    ds.PatientName = "Test^Patient"
    ds.PatientID = "TEST-0001"
    ds.StudyDate = "20260101"
    colour = pixels.ndim == 3
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.SamplesPerPixel = 3 if colour else 1
    if colour:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = bits_stored or ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if signed else 0
    ds.PixelData = pixels.tobytes()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def write(ds: Dataset, path: Path, *, file_meta: bool = True) -> Path:
    """Write `ds`; without `file_meta` the file has neither preamble nor File Meta (old ACR-NEMA style)."""
    if file_meta:
        ds.save_as(path, enforce_file_format=True)
    else:
        bare = ds.copy()
        del bare.file_meta
        bare.save_as(path, implicit_vr=True, little_endian=True, enforce_file_format=False)
    return path


def compress(ds: Dataset, transfer_syntax: str, **kwargs) -> Dataset:
    """Encode with pydicom's own encoders (RLE, JPEG-LS, JPEG 2000)."""
    ds = ds.copy()
    ds.compress(transfer_syntax, **kwargs)
    return ds


def gdcm_transcode(source: Path, target: Path, transfer_syntax: str) -> Path:
    """Re-encode a file with GDCM: JPEG Baseline, Extended and Lossless, which pydicom cannot encode."""
    import gdcm

    reader = gdcm.ImageReader()
    reader.SetFileName(str(source))
    if not reader.Read():
        raise RuntimeError(f"GDCM could not read {source}")
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.GetTSType(transfer_syntax)))
    change.SetInput(reader.GetImage())
    if not change.Change():
        raise RuntimeError(f"GDCM could not encode {transfer_syntax}")
    writer = gdcm.ImageWriter()
    writer.SetFileName(str(target))
    writer.SetFile(reader.GetFile())
    writer.SetImage(change.GetOutput())
    if not writer.Write():
        raise RuntimeError(f"GDCM could not write {target}")
    return target


def patient_cd(folder: Path, patients: int = 2, images_per_series: int = 2) -> Path:
    """A patient CD as an archive burns one: a DICOMDIR and, under it, each patient's study with one CR series
    (pydicom's FileSet, which names the files as Part 10 media want: PT000000/ST000000/SE000000/IM000000)."""
    from pydicom.fileset import FileSet

    file_set = FileSet()
    for p in range(patients):
        study, series = generate_uid(), generate_uid()
        for i in range(images_per_series):
            ds = dataset(gradient(64, 48, bits=12, seed=10 * p + i), bits_stored=12, modality="CR",
                         sop_class="1.2.840.10008.5.1.4.1.1.1")
            ds.PatientName, ds.PatientID = f"Patient{p + 1}^Test", f"CD-{p + 1:04d}"
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
            ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20260115", "101500", f"S{p + 1}", ""
            ds.StudyDescription, ds.SeriesDescription = "Chest PA", "PA"
            ds.SeriesNumber, ds.InstanceNumber = 1, i + 1
            file_set.add(ds)
    file_set.write(folder)
    return folder / "DICOMDIR"
