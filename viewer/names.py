"""Person names (DICOM PN) as a reader sees them."""

from __future__ import annotations

from pydicom.valuerep import PersonName

MAX_GROUPS = 3  # alphabetic, ideographic, phonetic


def readable_person_name(name: str) -> str:
    """The name's alphabetic group (else its ideographic, else its phonetic) as worklists write it: family name,
    comma, prefix, given and middle names, comma, suffix. "Müller^Jörg^^Dr.=山田^太郎" reads "Müller, Dr. Jörg",
    "O'Brien^Mary Ann^^^PhD" "O'Brien, Mary Ann, PhD", a family name alone as itself."""
    # a fourth group is not DICOM: leave it out rather than have pydicom warn about the patient's name
    person = PersonName("=".join(name.split("=")[:MAX_GROUPS]))
    groups = (person.alphabetic, person.ideographic, person.phonetic)
    shown = next((group for group in groups if group.replace("^", "").strip()), "")
    family, given, middle, prefix, suffix = ([" ".join(part.split()) for part in shown.split("^")] + [""] * 5)[:5]
    first = " ".join(part for part in (prefix, given, middle) if part)
    return ", ".join(part for part in (family, first, suffix) if part)


def is_date(da: str) -> bool:
    """Whether `da` has a DICOM date's form (YYYYMMDD), not an anonymiser's hash."""
    return len(da) == 8 and da.isdigit()


def readable_date(da: str) -> str:
    """A DICOM date (DA, YYYYMMDD) as YYYY-MM-DD; anything else as it is."""
    return f"{da[:4]}-{da[4:6]}-{da[6:8]}" if is_date(da) else da


def readable_time(tm: str) -> str:
    """A DICOM time (TM, HHMMSS.FFFFFF or shorter) as HH:MM; anything else as it is."""
    digits = tm.split(".")[0]
    return f"{digits[:2]}:{digits[2:4]}" if len(digits) >= 4 and digits.isdigit() else tm
