"""What the analyses produce for people: DICOM SR, evaluation against labels, and benchmarks."""
