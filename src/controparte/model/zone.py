"""The zone's names: how `<label>.<zone>` relates to an installation's label.

Pure; the one place where a domain name is turned into an installation label.
"""

from __future__ import annotations

from controparte.errors import ValidationError
from controparte.model.installation import validate_label


def label_of(name: str, zone: str) -> str | None:
    """The installation label that `name` names in `zone`, or None.

    `name` names a label when it is exactly `<label>.<zone>`: compared without regard to
    case, the trailing dot optional on either, surrounding blanks ignored. The label is
    returned lower-cased and valid (`validate_label`); None for the apex, a name outside
    the zone, a name deeper than one label below the apex, or an invalid label."""
    candidate = name.strip().lower().removesuffix(".")
    suffix = "." + zone.strip().lower().removesuffix(".")
    if suffix == "." or not candidate.endswith(suffix):
        return None
    relative = candidate[: -len(suffix)]
    if not relative or "." in relative:
        return None
    try:
        return validate_label(relative)
    except ValidationError:
        return None
