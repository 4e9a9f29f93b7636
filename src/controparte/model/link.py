"""A counterpart link: installation A calls installation B for one feature.

Direction matters: `a` is the caller (say, the company that sends its prima nota), `b`
the callee (its accountant's studio). The plan of a link names what each side must
allow; for Real Time the flows run both ways, so its direction is only a convention.

Values are checked once, here: after construction a `Link` is known valid.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

from controparte.errors import ValidationError
from controparte.model.installation import utcnow, validate_code

FEATURE_ID_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?")


def validate_feature_id(feature: str) -> str:
    """A feature id: 1-64 lower-case letters, digits and hyphens, no hyphen at either end
    (it appears in URLs, command lines and firewall comments)."""
    if not isinstance(feature, str) or not FEATURE_ID_RE.fullmatch(feature):
        raise ValidationError(
            "feature",
            f"{feature!r} is not a feature id (1-64 of a-z, 0-9 and '-', not at either end)",
        )
    return feature


@dataclass(frozen=True, slots=True)
class Link:
    """A caller `a`, a callee `b` (installation codes, as registered) and a feature id."""

    a: str
    b: str
    feature: str
    created: datetime = field(default_factory=utcnow, compare=False)

    @classmethod
    def create(cls, a: str, b: str, feature: str, *, now: datetime | None = None) -> Link:
        """Validate and build: two valid codes that differ (codes compare without case)
        and a valid feature id. Whether the feature is in the catalog is the service's
        to check."""
        a, b = validate_code(a), validate_code(b)
        if a.lower() == b.lower():
            raise ValidationError("b", "an installation cannot be linked to itself")
        return cls(a, b, validate_feature_id(feature), now or utcnow())

    def involves(self, code: str) -> bool:
        """True when `code` is the caller or the callee (compared without case)."""
        return code.lower() in (self.a.lower(), self.b.lower())

    def to_dict(self) -> dict[str, object]:
        """`{"a", "b", "feature", "created"}`, `created` in ISO 8601."""
        return {
            "a": self.a,
            "b": self.b,
            "feature": self.feature,
            "created": self.created.isoformat(),
        }
