"""plan(): the loader's decisions as a pure function of sheet rows and stored statuses."""

from datetime import UTC, datetime, timedelta

import pytest

from shared.core.model import Status, StoredRow
from shared.core.planning import LoadOptions, next_digest, plan, quiet_rows, task_id
from shared.core.rows import SheetRow, inputs_hash

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def sheet_row(row_id, text="hello"):
    inputs = {"id": row_id, "text": text}
    return SheetRow(2, row_id, inputs, inputs_hash(inputs))


def stored(row_id, status, generation=0, text="hello", lease=None, attempts=1):
    return StoredRow(
        row_id,
        Status(status),
        attempts=attempts,
        generation=generation,
        inputs_hash=sheet_row(row_id, text).inputs_hash,
        lease_expires_at=lease,
    )


def run(rows, rows_stored, live=None, **options):
    return plan(
        rows,
        {r.row_id: r for r in rows_stored},
        now=NOW,
        options=LoadOptions(**options),
        live_task_ids=live,
        namespace=None,
    )


def test_new_rows_become_pending_entities():
    result = run([sheet_row("a")], [])
    assert [(n.row_id, n.inputs) for n in result.new_rows] == [("a", {"id": "a", "text": "hello"})]
    assert result.transitions == []


@pytest.mark.parametrize("status", ["SUCCESS", "FAILED"])
def test_finished_rows_are_skipped(status):
    result = run([sheet_row("a")], [stored("a", status)])
    assert (result.new_rows, result.transitions, dict(result.skipped)) == ([], [], {status: 1})


def test_retry_failed_resets_failed_rows_under_a_new_generation():
    result = run(
        [sheet_row("a"), sheet_row("b")],
        [stored("a", "FAILED", 3), stored("b", "SUCCESS")],
        retry_failed=True,
    )
    (t,) = result.transitions
    assert (t.row_id, t.expect_status, t.expect_generation) == ("a", Status.FAILED, 3)
    assert t.changes["status"] == "PENDING"
    assert (t.changes["generation"], t.changes["attempts"]) == (4, 0)
    assert result.requeue["a"].generation == 4
    assert result.skipped["SUCCESS"] == 1


def test_reprocess_changed_reruns_finished_rows_whose_inputs_changed():
    rows = [sheet_row("a", "new text"), sheet_row("b")]
    result = run(rows, [stored("a", "SUCCESS"), stored("b", "SUCCESS")], reprocess_changed=True)
    (t,) = result.transitions
    assert t.row_id == "a"
    assert t.changes["inputs_hash"] == rows[0].inputs_hash
    assert '"new text"' in t.changes["inputs"]
    assert result.requeue["a"].reason == "reprocess_changed"
    # Without the option a changed row is left alone.
    assert run(rows, [stored("a", "SUCCESS")]).transitions == []


def test_expired_leases_go_back_to_pending_live_ones_are_skipped():
    result = run(
        [sheet_row("dead"), sheet_row("alive")],
        [
            stored("dead", "PROCESSING", lease=NOW - timedelta(seconds=1)),
            stored("alive", "PROCESSING", lease=NOW + timedelta(minutes=1)),
        ],
    )
    (t,) = result.transitions
    assert (t.row_id, t.expect_status, t.lease_expired_before) == ("dead", Status.PROCESSING, NOW)
    assert result.requeue["dead"].reason == "expired_lease"
    assert result.skipped["PROCESSING"] == 1


def test_pending_rows_whose_task_is_gone_are_re_enqueued():
    live = frozenset({task_id(None, "queued", 0)})
    result = run(
        [sheet_row("queued"), sheet_row("lost")],
        [stored("queued", "PENDING"), stored("lost", "PENDING")],
        live=live,
    )
    assert [t.row_id for t in result.transitions] == ["lost"]
    assert result.requeue["lost"].generation == 1
    assert result.skipped["PENDING"] == 1


def test_task_ids_are_stable_hashes_that_differ_by_generation_and_namespace():
    assert task_id(None, "a", 0) == task_id(None, "a", 0)
    assert len({task_id(None, "a", 0), task_id(None, "a", 1), task_id("ns", "a", 0)}) == 3
    assert task_id(None, "행 🐱", 0).replace("-", "").isalnum()


def test_pending_rows_edited_in_the_sheet_get_the_new_inputs_without_a_new_task():
    live = frozenset({task_id(None, "a", 0), task_id(None, "b", 0)})
    rows = [sheet_row("a", "edited"), sheet_row("b")]
    result = run(rows, [stored("a", "PENDING"), stored("b", "PENDING")], live=live)
    (t,) = result.transitions
    assert (t.row_id, t.expect_status, t.expect_generation) == ("a", Status.PENDING, 0)
    assert t.changes["inputs_hash"] == rows[0].inputs_hash
    assert "generation" not in t.changes  # its queued task stays valid
    assert result.requeue == {}
    assert result.inputs_updated == ["a"]


def test_a_lost_task_row_that_was_edited_is_re_enqueued_with_the_new_inputs():
    result = run([sheet_row("a", "edited")], [stored("a", "PENDING")], live=frozenset())
    (t,) = result.transitions
    assert t.changes["generation"] == 1
    assert '"edited"' in t.changes["inputs"]


# -- a sheet at rest ---------------------------------------------------------------------------


def test_rows_seen_finished_with_the_same_inputs_are_quiet():
    rows = [sheet_row("a"), sheet_row("b"), sheet_row("c", "changed"), sheet_row("new")]
    digest = {
        "a": (sheet_row("a").inputs_hash, "SUCCESS"),
        "b": (sheet_row("b").inputs_hash, "FAILED"),
        "c": (sheet_row("c").inputs_hash, "SUCCESS"),
    }
    assert quiet_rows(rows, digest, unfinished=set(), failed=None) == {
        "a": "SUCCESS",
        "b": "FAILED",
    }


def test_rows_a_query_finds_unfinished_or_failed_for_a_retry_are_read():
    rows = [sheet_row("a"), sheet_row("b")]
    digest = {r.row_id: (r.inputs_hash, "SUCCESS") for r in rows}
    assert quiet_rows(rows, digest, unfinished={"a"}, failed=None) == {"b": "SUCCESS"}
    assert quiet_rows(rows, digest, unfinished=set(), failed={"b"}) == {"a": "SUCCESS"}


def test_the_next_digest_keeps_finished_rows_read_and_quiet_ones_not_those_changed():
    read = {
        "done": stored("done", Status.SUCCESS),
        "waiting": stored("waiting", Status.PENDING),
        "retried": stored("retried", Status.FAILED),
    }
    digest = {"quiet": ("h", "FAILED"), "gone": ("h", "SUCCESS")}
    kept = next_digest(read, {"quiet": "FAILED"}, digest, touched={"retried"})
    assert kept == {"quiet": ("h", "FAILED"), "done": (read["done"].inputs_hash, "SUCCESS")}
