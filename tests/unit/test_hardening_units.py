"""Pure helpers behind the hardening: the scrubber, storable text, batches by size, and the
planner's recovery of expired claims outside the sheet."""

from datetime import UTC, datetime, timedelta

from shared.adapters.store import batched_by_size
from shared.core.model import Status, StoredRow
from shared.core.planning import LoadOptions, plan
from shared.core.redact import Redactor
from shared.core.text import has_lone_surrogate, storable, storable_value

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def test_the_scrubber_removes_registered_secrets_and_any_bearer_token():
    scrub = Redactor()
    scrub.add("app-Zk3PqL9xv2")
    scrub.add("app-Zk3PqL9xv2-longer")
    text = scrub("key app-Zk3PqL9xv2-longer, then app-Zk3PqL9xv2; header Bearer sk-unknown9")
    assert text == "key [redacted], then [redacted]; header Bearer [redacted]"


def test_short_values_are_not_registered_as_secrets():
    scrub = Redactor()
    scrub.add("abc")
    assert scrub("abc def") == "abc def"


def test_lone_surrogates_become_replacement_characters_everywhere():
    value = {"k\ud800": ["cut \ud83d", {"x": "\udc00"}], "n": 1}
    assert storable_value(value) == {"k\ufffd": ["cut \ufffd", {"x": "\ufffd"}], "n": 1}
    assert storable("🐱 whole") == "🐱 whole"
    assert has_lone_surrogate("a\ud800")
    assert not has_lone_surrogate("🐱")


def test_batches_respect_both_the_count_and_the_bytes():
    sizes = [3, 3, 3, 10, 1, 1, 1, 1]
    batches = list(batched_by_size(sizes, size_of=lambda n: n, count=3, max_bytes=6))
    assert [list(b) for b in batches] == [[3, 3], [3], [10], [1, 1, 1], [1]]


def test_expired_claims_outside_the_sheet_are_re_enqueued():
    dead = StoredRow("gone", Status.PROCESSING, 1, 0, lease_expires_at=NOW - timedelta(seconds=1))
    alive = StoredRow("busy", Status.PROCESSING, 1, 0, lease_expires_at=NOW + timedelta(hours=1))
    result = plan(
        [],
        {},
        now=NOW,
        options=LoadOptions(),
        live_task_ids=None,
        namespace=None,
        expired_claims=[dead, alive],
    )
    assert list(result.requeue) == ["gone"]
    assert result.requeue["gone"].reason == "expired_lease"
    [transition] = result.transitions
    assert (transition.expect_status, transition.lease_expired_before) == (Status.PROCESSING, NOW)
