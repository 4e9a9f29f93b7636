"""The form of a bulk-import file: its bytes in, numbered rows out, as
`Registry.import_many` takes them. Pure: reading the file is the caller's.

Contract:
- The bytes are UTF-8 text, with or without a byte-order mark.
- The form is JSON when the file's suffix is `.json`, CSV when it is `.csv`, and
  otherwise JSON when the text starts (after white space) with "[", else CSV.
- CSV: the first non-blank row names the columns (any order, any case, blanks around
  the names ignored), which must be among `IMPORT_FIELDS` and include `code` and
  `label`; each later non-blank row is numbered by the physical line it starts on.
- JSON: a list of objects, each numbered by the line its value starts on.
- Every problem of the form is reported at once, with its line, in one `ImportRefusedError`;
  the field values are the registry's to check.
"""

from __future__ import annotations

import csv
import io
import json
import re

from controparte.errors import ImportRefusedError

IMPORT_FIELDS = ("code", "label", "kind", "ip", "ipv6", "port", "gateway")
"""The fields of an installation in an import file (CSV columns, JSON keys)."""

ImportRows = list[tuple[int, dict[str, object]]]
"""(line, fields) pairs, as `Registry.import_many` takes them."""

_JSON_SPACE = re.compile(r"[ \t\n\r]*")


def parse_import(data: bytes, suffix: str) -> ImportRows:
    """The rows of an import file whose content is `data` and whose name ends in
    `suffix` (e.g. ".csv"; "" for none). Raises `ImportRefusedError` with every problem."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ImportRefusedError(((line, "not UTF-8 text"),)) from None
    suffix = suffix.lower()
    if suffix == ".json" or (suffix != ".csv" and text.lstrip().startswith("[")):
        return _json_rows(text)
    return _csv_rows(text)


def _csv_rows(text: str) -> ImportRows:
    """Rows of a CSV text whose first non-blank row names the columns. Lines are the
    text's physical lines (a row is numbered by the line it starts on)."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    problems: list[tuple[int, str]] = []
    rows: ImportRows = []
    header: list[str] | None = None
    while True:
        start = reader.line_num + 1
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            problems.append((reader.line_num, f"not valid CSV: {exc}"))
            break
        if not any(f.strip() for f in fields):
            continue  # a blank line
        if header is None:
            header = [f.strip().lower() for f in fields]
            problems += [(start, problem) for problem in _header_problems(header)]
            if problems:
                break
            continue
        if len(fields) != len(header):
            problems.append((start, f"{len(fields)} fields, the header names {len(header)}"))
            continue
        rows.append((start, dict(zip(header, fields, strict=True))))
    if header is None and not problems:
        problems.append((1, "no header row naming the columns (code,label,...)"))
    if problems:
        raise ImportRefusedError(tuple(problems))
    return rows


def _header_problems(header: list[str]) -> list[str]:
    """What is wrong with a CSV header's column names (lower-cased), in this order:
    unknown names, repeated names, missing required names."""
    unknown = [h for h in header if h not in IMPORT_FIELDS]
    repeated = sorted({h for h in header if header.count(h) > 1})
    missing = [h for h in ("code", "label") if h not in header]
    problems = []
    if unknown:
        problems.append(
            f"unknown column(s) {', '.join(unknown)}; known: {', '.join(IMPORT_FIELDS)}"
        )
    if repeated:
        problems.append(f"repeated column(s) {', '.join(repeated)}")
    if missing:
        problems.append(f"the header needs the column(s) {', '.join(missing)}")
    return problems


def _json_rows(text: str) -> ImportRows:
    """Objects of a JSON list, each numbered by the line its value starts on."""
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        problem = (exc.lineno, f"not valid JSON: {exc.msg} (column {exc.colno})")
        raise ImportRefusedError((problem,)) from None
    if not isinstance(items, list):
        raise ImportRefusedError(((1, "expected a JSON list of objects"),))
    # Second pass, over text known valid: where each item starts.
    decoder = json.JSONDecoder()
    position = _match_end(text, 0) + 1  # past the "["
    line, counted = 1, 0
    rows: ImportRows = []
    problems: list[tuple[int, str]] = []
    for item in items:
        position = _match_end(text, position)
        line += text.count("\n", counted, position)
        counted = position
        _, position = decoder.raw_decode(text, position)
        position = _match_end(text, position) + 1  # past the "," (or the final "]")
        if isinstance(item, dict):
            rows.append((line, {str(k): v for k, v in item.items()}))
        else:
            problems.append((line, f"expected an object, found {type(item).__name__}"))
    if problems:
        raise ImportRefusedError(tuple(problems))
    return rows


def _match_end(text: str, position: int) -> int:
    """The first position at or after `position` that is not JSON whitespace."""
    found = _JSON_SPACE.match(text, position)
    return position if found is None else found.end()
