"""Files people open (issue #18): `dify-batch export` against the emulator writes cells a
spreadsheet shows as text, starts its CSV with a byte order mark, survives hand-edited values,
and pages by bytes, so rows near Datastore's 1 MiB entity limit export in full."""

from __future__ import annotations

import csv
import json
import math
from datetime import UTC, datetime, timedelta

import pytest
from google.cloud import datastore

from shared.core.model import KIND, NewRow
from tests.integration import test_write_back as base
from tests.integration.test_cli import csv_rows, run
from tests.integration.test_write_back import load, set_rows

pytestmark = pytest.mark.emulator
FINISHED = datetime(2026, 12, 1, tzinfo=UTC)
FORMULAS = ['=HYPERLINK("https://evil.example","x")', "+1+cmd|' /C calc'!A0", "-2-3", "@SUM(A1)"]


def put(ds_client, row_id, row_number, **values):
    entity = datastore.Entity(
        ds_client.key(KIND, row_id), exclude_from_indexes=("inputs", "result", "error")
    )
    entity.update(row_number=row_number, **values)
    ds_client.put(entity)


@pytest.fixture
def hostile(store, ds_client):
    """Ids, inputs, outputs and errors that a spreadsheet would run as formulas."""
    store.insert_new(
        [
            NewRow("=1+1", {"q": FORMULAS[0]}, "h", 3),
            NewRow("plain", {"q": "\tindented", "n": "-3.5"}, "h", 2),
        ]
    )
    entity = ds_client.get(ds_client.key(KIND, "=1+1"))
    entity.update(status="FAILED", error=FORMULAS[1], result=json.dumps({"a": "@x"}))
    ds_client.put(entity)
    return ds_client


def test_export_csv_neutralises_formula_cells_and_starts_with_a_bom(hostile, namespace):
    result = run(namespace, "export", "--format", "csv")
    assert result.exit_code == 0, result.output
    rows = csv_rows(result.stdout)
    assert [r["id"] for r in rows] == ["plain", "'=1+1"]  # by sheet row, formula defused
    assert rows[1]["error"] == "'" + FORMULAS[1]
    assert json.loads(rows[0]["inputs"]) == {"q": "\tindented", "n": "-3.5"}  # JSON: text
    for row in rows:
        for value in row.values():
            assert not value.startswith(("=", "+", "-", "@", "\t", "\r"))


def test_export_csv_raw_and_without_bom_when_asked(hostile, namespace):
    result = run(namespace, "export", "--format", "csv", "--raw", "--no-bom")
    assert not result.stdout.startswith("\ufeff")
    assert "\n=1+1," in result.stdout
    assert FORMULAS[1] in result.stdout


def test_export_survives_hand_edited_values(store, ds_client, namespace):
    put(ds_client, "b", 3, status="FAILED", error=b"\xed\x95\x9c bytes", elapsed_time=math.nan)
    put(ds_client, "a", 2, status="SUCCESS", result=b'{"k": 1}', total_tokens="many")
    lines = run(namespace, "export", "--format", "jsonl").stdout.splitlines()
    rows = [json.loads(line) for line in lines]  # strict JSON: no bare NaN
    assert [r["id"] for r in rows] == ["a", "b"]  # by sheet row
    assert rows[0]["outputs"] == {"k": 1}
    assert rows[1]["error"] == "한 bytes"
    assert rows[1]["elapsed_time"] == "nan"
    assert run(namespace, "export", "--format", "csv").exit_code == 0


@pytest.fixture
def large_rows(ds_client):
    """10 rows of 800 KB each: 8 MB in all, twice the emulator's 4 MiB message limit."""
    for i in range(10):
        put(
            ds_client,
            f"big{i}",
            i + 2,
            status="SUCCESS",
            inputs=json.dumps({"q": str(i)}),
            result=json.dumps({"text": chr(0x41 + i) * 800_000}),
            write_pending=True,
            finished_at=FINISHED,
            total_tokens=1,
        )


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_ten_rows_of_800_kb_export_in_full(large_rows, namespace, fmt, tmp_path):
    target = tmp_path / f"out.{fmt}"
    result = run(namespace, "export", "--format", fmt, "-o", str(target))
    assert result.exit_code == 0, result.output
    text = target.read_text(encoding="utf-8")
    if fmt == "csv":
        csv.field_size_limit(2_000_000)  # the reader's default is 128 KiB a cell
        outputs = [json.loads(r["outputs"]) for r in csv_rows(text)]
    else:
        outputs = [json.loads(line)["outputs"] for line in text.splitlines()]
    assert [o["text"] for o in outputs] == [chr(0x41 + i) * 800_000 for i in range(10)]


def test_the_pending_write_query_reads_ten_rows_of_800_kb(large_rows, store):
    pages = list(store.pending_write_pages())
    assert sorted(f.row_id for page in pages for f in page) == [f"big{i}" for i in range(10)]
    assert all(len(f.outputs["text"]) == 800_000 for page in pages for f in page)
    assert len(pages) > 1  # paged by bytes, not 10 rows in one message


def test_the_loaders_run_summary_query_reads_ten_rows_of_800_kb(large_rows, store):
    rows = store.finished_since(FINISHED - timedelta(hours=1))
    assert sum(r["total_tokens"] for r in rows) == 10


# The loader over real HTTP on a sheet with rows it cannot run (from test_write_back.py).
sheets, llm, stack = base.sheets, base.llm, base.stack


def test_export_holds_every_sheet_row_also_those_the_loader_did_not_store(stack, sheets, namespace):
    set_rows(
        sheets,
        ["id", "question"],
        ["a", "fine"],
        ["", "no id"],
        ["a", "same id again"],
        ["b", "fine too"],
    )
    load(stack)
    rows = csv_rows(run(namespace, "export").stdout)
    assert [(r["row_number"], r["id"], r["status"]) for r in rows] == [
        ("2", "a", "PENDING"),
        ("3", "", "INVALID"),
        ("4", "a", "DUPLICATE_ID"),
        ("5", "b", "PENDING"),
    ]
    assert rows[1]["error"] == "the id cell is empty"
    assert "also on row 2" in rows[2]["error"]
    set_rows(sheets, ["id", "question"], ["a", "fine"], ["c", "the empty id filled in"])
    load(stack)  # the newest run's view replaces the old one
    lines = run(namespace, "export", "--format", "jsonl").stdout.splitlines()
    assert [json.loads(x)["status"] for x in lines] == ["PENDING", "PENDING", "PENDING"]
