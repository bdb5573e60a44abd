"""render.py: values a person reads (no Extended-JSON wrappers, no raw dicts) and tables that
never cut an id, at any console width."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from bson import Binary, Decimal128, Int64, ObjectId, Regex, Timestamp, json_util
from rich.console import Console

from fluxa_integrity.cli.render import ELLIPSIS, Col, fits, iso, print_table, value, when

UTC = timezone.utc


def _stored(v):
    """What the state store hands back for a sample value: relaxed Extended JSON."""
    return json.loads(json_util.dumps(v, json_options=json_util.RELAXED_JSON_OPTIONS))


def test_values_read_back_from_the_store_render_like_the_originals():
    oid = ObjectId()
    at = datetime(2026, 3, 4, 5, 6, 7, 250000, tzinfo=UTC)
    sample = {"_id": oid, "value": at, "userId": oid}
    stored = _stored(sample)
    assert "$oid" in json.dumps(stored) and "$date" in json.dumps(stored)  # the raw shape people saw
    for v in (sample, stored):
        assert value(v["_id"], key="_id") == str(oid)
        assert value(v["value"]) == "2026-03-04T05:06:07.250Z"
    assert value({"value": stored["value"]}) == "2026-03-04T05:06:07.250Z"  # an evidence wrapper is flattened
    assert value(stored) == f"{{_id: {oid}, value: 2026-03-04T05:06:07.250Z, userId: {oid}}}"
    assert value({"$date": {"$numberLong": "0"}}) == "1970-01-01T00:00:00Z"  # canonical form too
    assert value({"$numberLong": "9007199254740993"}) == "9007199254740993"
    assert value({"$missing": True}) == "(missing)"


def test_bson_scalars_and_python_values():
    assert value(None) == "null" and value(True) == "true" and value(3) == "3" and value(Int64(5)) == "5"
    assert value(Decimal128("1.10")) == "1.10"
    assert value(Timestamp(1700000000, 3)) == "Timestamp(1700000000, 3)"
    assert value(Regex("^a", "i")) == "/^a/i"
    assert value(b"\x00\x01") == "<2 bytes: 0001>"
    assert value(Binary(b"x" * 40)).startswith("<40 bytes: ") and value(Binary(b"x" * 40)).endswith(f"{ELLIPSIS}>")
    assert value(datetime(2026, 1, 1)) == "2026-01-01T00:00:00Z"  # naive is UTC
    assert value(datetime(2026, 1, 1, 2, tzinfo=timezone(timedelta(hours=2)))) == "2026-01-01T00:00:00Z"
    assert iso(datetime(2026, 1, 1, tzinfo=UTC)) == "2026-01-01T00:00:00Z"
    assert when("2026-01-02T03:04:05.5+00:00") == "2026-01-02T03:04:05Z" and when("soon") == "soon"
    assert when(None) == "-" and when(datetime(2026, 5, 6, 7, tzinfo=UTC), day=True) == "2026-05-06"


def test_control_characters_are_visible_and_long_values_shortened_except_ids():
    assert value("a\x00b@example.com") == "a\\x00b@example.com"
    long = "x" * 500
    assert value(long).endswith(ELLIPSIS) and len(value(long)) == 60
    assert value(long, key="_id") == long and value(long, key="conversationId") == long
    nested = value({"_id": long, "note": long})
    assert long in nested and f"note: {'x' * 29}{ELLIPSIS}" in nested
    many = value(list(range(20)))
    assert many.startswith("[0, 1,") and "+12 more" in many


def _render(width: int, cols, rows) -> str:
    console = Console(width=width, color_system=None, file=None)
    with console.capture() as cap:
        print_table(console, "backups", cols, rows)
    return cap.get()


def test_ids_stay_whole_on_one_line_at_every_width():
    ids = ["20261101T120000Z-abcdef", "20261102T120000Z-123456"]
    cols = [Col("id", id=True), Col("kind"), Col("db"), Col("note")]
    rows = [[i, "incremental", "fluxa_production", "a long note that has to wrap somewhere " * 2] for i in ids]
    for width in (200, 80, 60, 40, 20):
        text = _render(width, cols, rows)
        lines = text.splitlines()
        for i in ids:  # whole, on one line (a wrapped or folded id would be split across lines)
            assert any(i in ln for ln in lines), (width, text)
        if width <= 40:  # too narrow for a table: one record per block
            assert f"id: {ids[0]}\n    kind:" in text and "note: a" in text
        else:
            assert all(len(ln.rstrip()) <= width for ln in lines), (width, text)


def test_fits_counts_every_id_column_whole():
    cols = [Col("id", id=True), Col("rule", id=True), Col("x")]
    rows = [["1", "conversations.userId.ref", "dangling"]]
    assert fits(80, cols, rows) and not fits(30, cols, rows)


def test_cells_are_text_not_markup():
    cols = [Col("_id", id=True), Col("value")]
    text = _render(200, cols, [["1", value(["a", "b"])], ["2", "[bold]x[/bold]"]])
    assert "[a, b]" in text and "[bold]x[/bold]" in text


def test_whole_columns_are_never_folded():
    cols = [Col("#", id=True), Col("time", whole=True), Col("details")]
    rows = [["1", "2026-11-26T10:43:08Z", "role: Technical Lead; reason: incident opened; trigger: opened " * 2]]
    text = _render(60, cols, rows)
    assert "2026-11-26T10:43:08Z" in text and "details" in text.splitlines()[1]  # a table, the time whole
