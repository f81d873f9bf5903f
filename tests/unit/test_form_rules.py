"""The loader's input check applies Dify 1.14.1's own rules (BaseAppGenerator._validate_inputs,
factories/file_factory): each case below is what that server answered (see
tests/dify_server for the same rows against it)."""

from __future__ import annotations

import pytest

from shared.core.form_check import (
    FormError,
    check_row,
    detected_type,
    parse_form,
    refusal,
    without_blanks,
)

FORM = parse_form(
    {
        "user_input_form": [
            {"text-input": {"variable": "title", "required": True, "max_length": 48}},
            {"select": {"variable": "language", "options": ["ko", "en"], "max_length": 48}},
            {"number": {"variable": "count", "max_length": 2}},
            {"paragraph": {"variable": "notes", "max_length": 10}},
            {
                "file": {
                    "variable": "doc",
                    "max_length": 48,
                    "allowed_file_types": ["document"],
                    "allowed_file_upload_methods": ["remote_url", "local_file"],
                }
            },
            {
                "file-list": {
                    "variable": "pics",
                    "max_length": 2,
                    "allowed_file_types": ["image"],
                    "allowed_file_upload_methods": ["remote_url", "local_file"],
                }
            },
            {"json_object": {"variable": "meta"}},
            {"file": {"variable": "upload", "allowed_file_upload_methods": ["local_file"]}},
        ]
    }
)


def test_blank_optional_cells_are_left_out_not_sent_as_empty_text():
    sent, reason = check_row(FORM, {"title": "제목", "language": "", "count": " ", "pics": ""})
    assert reason is None
    assert sent == {"title": "제목"}
    assert without_blanks({"a": "", "b": "x", "c": 0}) == {"b": "x", "c": 0}


@pytest.mark.parametrize(
    ("count", "refused"),
    [("1e5", True), ("1_000", False), ("3.5", False), ("-2", False), ("1.5e3", False),
     ("12,5", True), ("nan", True)],
)  # fmt: skip
def test_numbers_follow_difys_own_conversion(count, refused):
    _, reason = check_row(FORM, {"title": "t", "count": count})
    assert (reason is not None) is refused


def test_max_length_counts_characters_of_text_and_paragraph_only():
    assert check_row(FORM, {"title": "가" * 48})[1] is None
    assert "at most 48 characters" in (check_row(FORM, {"title": "가" * 49})[1] or "")
    assert "at most 10 characters" in (check_row(FORM, {"title": "t", "notes": "x" * 11})[1] or "")
    # number and select carry a max_length Dify ignores
    assert check_row(FORM, {"title": "t", "count": "12345"})[1] is None


def test_a_file_list_takes_at_most_max_length_files():
    two = "https://h/a.png\nhttps://h/b.jpg"
    sent, reason = check_row(FORM, {"title": "t", "pics": two})
    assert reason is None
    assert [f["type"] for f in sent["pics"]] == ["image", "image"]
    _, reason = check_row(FORM, {"title": "t", "pics": two + "\nhttps://h/c.gif"})
    assert "at most 2 files" in (reason or "")


def test_file_types_are_detected_as_dify_detects_them():
    sent, reason = check_row(FORM, {"title": "t", "doc": "https://h/files/report"})
    assert reason is None
    assert sent["doc"]["type"] == "document"
    _, reason = check_row(FORM, {"title": "t", "doc": "https://h/photo.PNG"})
    assert "takes document files" in (reason or "")
    assert ".png" in (reason or "")
    sent, _ = check_row(FORM, {"title": "t", "doc": "https://h/page.htm?x=1"})
    assert sent["doc"]["type"] == "document"


def test_only_allowed_upload_methods_pass():
    _, reason = check_row(FORM, {"title": "t", "upload": "https://h/a.pdf"})
    assert "only uploaded files" in (reason or "")


def test_json_object_cells_are_sent_as_objects():
    sent, reason = check_row(FORM, {"title": "t", "meta": '{"k": [1, "가"]}'})
    assert reason is None
    assert sent["meta"] == {"k": [1, "가"]}
    _, reason = check_row(FORM, {"title": "t", "meta": "[1, 2]"})
    assert "JSON object" in (reason or "")


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        ([], "not an object"),
        ({"user_input_form": {"a": 1}}, "must be a list"),
        ({"user_input_form": [{"select": {"variable": "s", "options": 5}}]}, "`options`"),
        ({"user_input_form": [{"select": {"variable": "s", "required": "false"}}]}, "`required`"),
        ({"user_input_form": [{"text-input": {"variable": "t", "max_length": "9"}}]}, "max_len"),
        ({"user_input_form": [{"a": {}, "b": {}}]}, "one key"),
        ({"user_input_form": [{"text-input": {"variable": 5}}]}, "`variable`"),
        ({"user_input_form": [{"x": {"variable": "v"}}] * 5000}, "at most"),
    ],
)
def test_a_hostile_form_is_refused_naming_the_problem(payload, needle):
    with pytest.raises(FormError) as caught:
        parse_form(payload)
    assert needle in caught.value.message


@pytest.mark.parametrize(
    ("inputs", "expected"),
    [
        ({}, "title is required in input form"),
        ({"title": "t", "language": ""}, "language in input form must be one of the following"),
        ({"title": "t", "count": "1e5"}, "count in input form must be a valid number"),
        ({"title": "가" * 49}, "title in input form must be less than 48 characters"),
        ({"title": "t", "doc": "https://h/a.pdf"}, "doc in input form must be a file"),
        ({"title": "t", "pics": [{"type": "image"}] * 3}, "must be less than 2 files"),
        ({"title": "t", "meta": "{}"}, "meta in input form must be a dict"),
        ({"title": "t", "count": "1_000", "notes": "x" * 10}, None),
    ],
)
def test_difys_own_refusal_of_inputs_as_sent(inputs, expected):
    """What the worker uses to tell a refused streamed request from one slow to start."""
    reason = refusal(FORM, inputs)
    if expected is None:
        assert reason is None
    else:
        assert expected in (reason or "")


@pytest.mark.parametrize(
    ("name", "content_type", "kind"),
    [
        ("report.pdf", "application/pdf", "document"),
        ("report", "text/plain", "document"),  # no extension: the host's type
        ("data.bin", "text/plain", "custom"),  # the name's type wins over the host's
        ("a.PNG", "", "image"),
        ("clip.mp4", "", "video"),
    ],
)
def test_the_file_type_dify_detects(name, content_type, kind):
    assert detected_type(name, content_type) == kind


def test_custom_files_pass_only_with_a_listed_extension():
    form = parse_form(
        {
            "user_input_form": [
                {
                    "file": {
                        "variable": "f",
                        "allowed_file_types": ["document", "custom"],
                        "allowed_file_extensions": [".zip"],
                    }
                }
            ]
        }
    )
    sent, reason = check_row(form, {"f": "https://h/a.zip"})
    assert reason is None
    assert sent["f"]["type"] == "custom"
    _, reason = check_row(form, {"f": "https://h/a.png"})
    assert "or ones named zip" in (reason or "")
