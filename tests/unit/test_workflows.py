"""Several workflows: the WORKFLOWS setting and the routing of rows, pure."""

import json

import pytest

from shared.core.errors import ConfigError, SheetError
from shared.core.rows import SheetRow, inputs_hash
from shared.core.workflows import Routing, Workflow, parse_input_columns, parse_workflows, route

GOOD = {
    "math": {
        "endpoint": "https://api.dify.ai/v1/workflows/run",
        "api_key_secret_id": "math-key",
        "queue": "math",
        "workflow_id": "3C90C3CC0D444B5088888DD25736052A",
        "input_columns": {"질문": "problem"},
    },
    "essay": {"endpoint": "http://dify.local/v1/workflows/run", "api_key": "app-essay-key"},
}


def test_workflows_are_read_with_a_pinned_version():
    workflows = parse_workflows(json.dumps(GOOD))
    assert (
        workflows["math"].endpoint
        == "https://api.dify.ai/v1/workflows/3c90c3cc-0d44-4b50-8888-8dd25736052a/run"
    )
    assert workflows["math"].input_columns == {"질문": "problem"}
    assert workflows["essay"].api_key == "app-essay-key"


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"endpoint": "not a url"}, "workflow 'math': endpoint"),
        ({"response_mode": "fast"}, "workflow 'math': response_mode"),
        ({"timeout_minutes": -1}, "workflow 'math': timeout_minutes"),
        ({"workflow_id": "wf-1"}, "workflow 'math': workflow_id"),
        ({"colour": "blue"}, "workflow 'math': colour"),
        ({"api_key": "app-x"}, "exactly one of api_key"),
        ({"api_key_secret_id": "app-Zk3Pq"}, "looks like a Dify API key"),
    ],
)
def test_bad_workflows_are_named_with_their_field(change, needle):
    bad = {**GOOD, "math": {**GOOD["math"], **change}}
    with pytest.raises(ConfigError) as caught:
        parse_workflows(json.dumps(bad))
    assert needle in caught.value.message
    assert "app-Zk3Pq" not in caught.value.message


def test_workflows_must_be_a_json_object():
    with pytest.raises(ConfigError, match="not JSON"):
        parse_workflows("{math:")
    with pytest.raises(ConfigError, match="JSON object"):
        parse_workflows("[]")


def test_input_columns_parse():
    assert parse_input_columns("질문->question, 학년->grade") == {
        "질문": "question",
        "학년": "grade",
    }
    with pytest.raises(ConfigError, match="INPUT_COLUMNS"):
        parse_input_columns("질문=question")


ROUTING = Routing(
    {
        "math": Workflow("math", "https://x/run", input_columns={"질문": "problem"}),
        "essay": Workflow("essay", "https://y/run"),
    },
    column="kind",
    default="essay",
    input_columns={"질문": "question"},
    multi=True,
)


def row(row_id, kind, text):
    inputs = {"id": row_id, "질문": text}
    return SheetRow(2, row_id, inputs, inputs_hash(inputs), route=kind)


def test_rows_are_routed_renamed_and_hashed_with_their_workflow():
    routed, invalid = route(
        [row("a", "math", "1+1"), row("b", "", "글"), row("c", "x", "?")], ROUTING
    )
    assert [(r.row_id, r.workflow) for r in routed] == [("a", "math"), ("b", "essay")]
    assert routed[0].inputs == {"id": "a", "problem": "1+1"}
    assert routed[1].inputs == {"id": "b", "question": "글"}
    [bad] = invalid
    assert "'x', which names no workflow; known: essay, math" in bad.reason
    moved, _ = route([row("a", "essay", "1+1")], ROUTING)
    assert moved[0].inputs_hash != routed[0].inputs_hash  # a new workflow counts as an edit


def test_an_empty_cell_without_a_default_is_invalid():
    routing = Routing(ROUTING.workflows, column="kind", default=None, multi=True)
    routed, [bad] = route([row("a", "", "?")], routing)
    assert routed == []
    assert "DEFAULT_WORKFLOW is not set" in bad.reason


def test_mappings_and_the_routing_column_must_name_real_headers():
    ROUTING.check_headers(["id", "kind", "질문"])
    with pytest.raises(SheetError, match="WORKFLOW_COLUMN 'kind'"):
        ROUTING.check_headers(["id", "질문"])
    with pytest.raises(SheetError, match="INPUT_COLUMNS maps '질문'"):
        ROUTING.check_headers(["id", "kind"])


def test_a_single_workflow_keeps_todays_hashes():
    single = Routing({"default": Workflow("default", "https://x/run")})
    original = row("a", "", "q")
    [routed], _ = route([original], single)
    assert routed.inputs_hash == original.inputs_hash
    assert routed.workflow == "default"
