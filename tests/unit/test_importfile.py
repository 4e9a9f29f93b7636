"""The form of an import file (`service/importfile.py`): bytes and a suffix in, numbered
rows or every problem with its line out. Tables of cases, and properties: rows written
by the standard CSV and JSON writers come back as written, each on its line."""

from __future__ import annotations

import csv
import io
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controparte.errors import ImportRefusedError
from controparte.model.importfile import ImportRows, parse_import

KNOWN = "known: code, label, kind, ip, ipv6, port, gateway"

ROWS: list[tuple[str, bytes, str, ImportRows]] = [
    (
        "csv: byte-order mark, columns in any order and case, blanks around names",
        "\ufeffLabel, code ,port,ip\nalpha,A1,9000,192.0.2.1\n\nbeta,B2,,\n".encode(),
        ".csv",
        [
            (2, {"label": "alpha", "code": "A1", "port": "9000", "ip": "192.0.2.1"}),
            (4, {"label": "beta", "code": "B2", "port": "", "ip": ""}),
        ],
    ),
    (
        "csv: blank lines before the header and between rows count as lines",
        b"\n\ncode,label\n\n , \nA1,a\n",
        ".csv",
        [(6, {"code": "A1", "label": "a"})],
    ),
    (
        "csv: values are kept as written (the registry strips them)",
        b"code,label\n A1 , a \n",
        ".csv",
        [(2, {"code": " A1 ", "label": " a "})],
    ),
    (
        "csv: a quoted field over two lines; the next row is numbered by its own line",
        b'code,label\n"A1","multi\nline"\nA2,b\n',
        ".csv",
        [(2, {"code": "A1", "label": "multi\nline"}), (4, {"code": "A2", "label": "b"})],
    ),
    (
        "csv: CRLF line ends",
        b"code,label\r\nA1,a\r\n",
        ".csv",
        [(2, {"code": "A1", "label": "a"})],
    ),
    ("csv: a header and no rows", b"code,label\n", ".csv", []),
    (
        "json: each object numbered by the line it starts on; values keep their JSON type",
        b'[\n  {"code": "A1", "port": 9100, "ip": null},\n\n  {"code": "A2",\n   "label": "b"}\n]',
        ".json",
        [(2, {"code": "A1", "port": 9100, "ip": None}), (4, {"code": "A2", "label": "b"})],
    ),
    ("json: an empty list", b"[]", ".json", []),
    (
        "json: with a byte-order mark",
        b'\xef\xbb\xbf[{"code": "A1"}]',
        ".json",
        [(1, {"code": "A1"})],
    ),
    (
        "form by content: no suffix and text starting with [ is JSON",
        b'\n  [{"code": "X1", "label": "x"}]',
        "",
        [(2, {"code": "X1", "label": "x"})],
    ),
    (
        "form by suffix, in any case",
        b'[{"code": "X1", "label": "x"}]',
        ".JSON",
        [(1, {"code": "X1", "label": "x"})],
    ),
    (
        "form by content: any other suffix is CSV",
        b"code,label\nX1,x\n",
        ".txt",
        [(2, {"code": "X1", "label": "x"})],
    ),
]


@pytest.mark.parametrize(
    ("data", "suffix", "expected"), [case[1:] for case in ROWS], ids=[case[0] for case in ROWS]
)
def test_rows(data: bytes, suffix: str, expected: ImportRows) -> None:
    assert parse_import(data, suffix) == expected


PROBLEMS: list[tuple[str, bytes, str, list[tuple[int, str]]]] = [
    (
        "csv: unknown column",
        b"code,name\nA1,alpha\n",
        ".csv",
        [(1, f"unknown column(s) name; {KNOWN}"), (1, "the header needs the column(s) label")],
    ),
    (
        "csv: a required column missing",
        b"code,ip\nA1,192.0.2.1\n",
        ".csv",
        [(1, "the header needs the column(s) label")],
    ),
    ("csv: a repeated column", b"code,label,CODE\n", ".csv", [(1, "repeated column(s) code")]),
    (
        "csv: every header problem at once, on the header's line",
        b"\n\ncode,code,colour\n",
        ".csv",
        [
            (3, f"unknown column(s) colour; {KNOWN}"),
            (3, "repeated column(s) code"),
            (3, "the header needs the column(s) label"),
        ],
    ),
    (
        "csv: JSON text with a .csv suffix is read as CSV",
        b'[{"code": "A1"}]',
        ".csv",
        [
            (1, f'unknown column(s) [{{"code": "a1"}}]; {KNOWN}'),
            (1, "the header needs the column(s) code, label"),
        ],
    ),
    (
        "csv: every row with the wrong number of fields",
        b"code,label\nA1,a,x\nA2\nA3,c\n",
        ".csv",
        [(2, "3 fields, the header names 2"), (3, "1 fields, the header names 2")],
    ),
    ("csv: empty", b"", ".csv", [(1, "no header row naming the columns (code,label,...)")]),
    (
        "csv: blank lines only",
        b"\n \n,\n",
        ".csv",
        [(1, "no header row naming the columns (code,label,...)")],
    ),
    (
        "csv: a quote left open ends the reading",
        b'code,label\nA1\n"A2,b\n',
        ".csv",
        [(2, "1 fields, the header names 2"), (3, "not valid CSV: unexpected end of data")],
    ),
    (
        "csv: text after a closing quote",
        b'code,label\nA1,a\nA2,"b"c\n',
        ".csv",
        [(3, "not valid CSV: ',' expected after '\"'")],
    ),
    (
        "not UTF-8, on the line of the first bad byte",
        b"code,label\nA1,caf\xe9\n",
        ".csv",
        [(2, "not UTF-8 text")],
    ),
    (
        "json: invalid, at the line and column where it breaks",
        b'[\n  {"code": "A1", "label": "a"},\n  {"code": "A2",}\n]',
        ".json",
        [(3, "not valid JSON: Expecting property name enclosed in double quotes (column 17)")],
    ),
    ("json: empty", b"", ".json", [(1, "not valid JSON: Expecting value (column 1)")]),
    ("json: not a list", b'{"code": "A1"}', ".json", [(1, "expected a JSON list of objects")]),
    (
        "json: not a list, always line 1",
        b'\n\n"text"',
        ".json",
        [(1, "expected a JSON list of objects")],
    ),
    (
        "json: every item that is not an object",
        b'[\n  {"code": "A1"},\n\n  "A2",\n  3\n]',
        ".json",
        [(4, "expected an object, found str"), (5, "expected an object, found int")],
    ),
]


@pytest.mark.parametrize(
    ("data", "suffix", "expected"),
    [case[1:] for case in PROBLEMS],
    ids=[case[0] for case in PROBLEMS],
)
def test_problems(data: bytes, suffix: str, expected: list[tuple[int, str]]) -> None:
    with pytest.raises(ImportRefusedError) as raised:
        parse_import(data, suffix)
    assert list(raised.value.problems) == expected


VALUES = st.text(st.characters(codec="utf-8", exclude_characters="\r\x00"))
CODES = st.text(st.characters(codec="utf-8", exclude_characters="\r\x00"), min_size=1).filter(
    str.strip
)
ROW = st.fixed_dictionaries({"code": CODES, "label": VALUES})


@given(st.lists(ROW, max_size=8))
def test_csv_rows_come_back_on_the_line_they_start(rows: list[dict[str, str]]) -> None:
    out = io.StringIO()
    writer = csv.DictWriter(out, ["code", "label"], lineterminator="\n")
    writer.writeheader()
    starts = []
    for row in rows:
        starts.append(out.getvalue().count("\n") + 1)
        writer.writerow(row)
    assert parse_import(out.getvalue().encode(), ".csv") == list(zip(starts, rows, strict=True))


JSON_VALUES = st.none() | st.integers() | VALUES
OBJECT = st.dictionaries(VALUES, JSON_VALUES, max_size=4)


@given(st.lists(OBJECT, max_size=8), st.sampled_from([None, 0, 2]))
def test_json_objects_come_back_on_the_line_they_start(
    items: list[dict[str, object]], indent: int | None
) -> None:
    text = json.dumps(items, indent=indent)
    found = parse_import(text.encode(), ".json")
    assert [fields for _, fields in found] == items
    lines = text.split("\n")
    for line, _ in found:
        assert lines[line - 1].lstrip().startswith(("{", "[{"))
