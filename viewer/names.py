"""Person names (DICOM PN) as a reader sees them."""

from __future__ import annotations

from pydicom.valuerep import PersonName

MAX_GROUPS = 3  # alphabetic, ideographic, phonetic


def readable_person_name(name: str) -> str:
    """The name's alphabetic group (else its ideographic, else its phonetic), components apart by spaces:
    "Müller^Jörg=山田^太郎" reads "Müller Jörg", as "Doe^Jane" reads "Doe Jane"."""
    # a fourth group is not DICOM: leave it out rather than have pydicom warn about the patient's name
    person = PersonName("=".join(name.split("=")[:MAX_GROUPS]))
    groups = (person.alphabetic, person.ideographic, person.phonetic)
    shown = next((group for group in groups if group.replace("^", "").strip()), "")
    return " ".join(shown.replace("^", " ").split())
