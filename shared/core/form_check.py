"""Pure: check sheet rows against the workflow's input form (`GET /v1/parameters`) before
anything runs, and turn file cells (URLs) into the file objects Dify expects.

Dify itself refuses a missing required variable, a `select` value outside its options and text
past `max_length` (400 `invalid_param`), and a URL where a file object belongs: checking first
costs no run, and the reason names the cell.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

CHECK_PREFIX = "input_check"  # the `error` of rows the check failed: re-run once fixed
FILE_CONTROLS = frozenset({"file", "file-list"})
_EXTENSIONS = {
    "image": {"jpg", "jpeg", "png", "gif", "webp", "svg"},
    "document": {
        "txt", "md", "markdown", "mdx", "pdf", "html", "xlsx", "xls", "doc", "docx", "csv",
        "eml", "msg", "pptx", "ppt", "xml", "epub", "properties", "vtt",
    },
    "audio": {"mp3", "m4a", "wav", "amr", "mpga"},
    "video": {"mp4", "mov", "mpeg", "webm"},
}  # fmt: skip
_NUMBER = re.compile(r"^\s*[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?\s*$")


@dataclass(frozen=True)
class Variable:
    name: str
    control: str  # text-input, paragraph, select, number, file, file-list, ...
    required: bool = False
    max_length: int | None = None
    options: tuple[str, ...] = ()
    file_types: tuple[str, ...] = ()


def parse_form(payload: Any) -> list[Variable]:
    """`user_input_form` of a /parameters answer: a list of one-key objects, control -> spec."""
    form = payload.get("user_input_form") if isinstance(payload, dict) else None
    variables = []
    for item in form if isinstance(form, list) else []:
        if not isinstance(item, dict) or len(item) != 1:
            continue
        ((control, spec),) = item.items()
        if not isinstance(spec, dict) or not spec.get("variable"):
            continue
        max_length = spec.get("max_length")
        variables.append(
            Variable(
                name=str(spec["variable"]),
                control=str(control),
                required=bool(spec.get("required")),
                max_length=max_length if isinstance(max_length, int) and max_length > 0 else None,
                options=tuple(str(o) for o in spec.get("options") or ()),
                file_types=tuple(str(t) for t in spec.get("allowed_file_types") or ()),
            )
        )
    return variables


def missing_required(form: Sequence[Variable], headers: Iterable[str]) -> list[str]:
    present = set(headers)
    return [v.name for v in form if v.required and v.name not in present]


def unknown_columns(form: Sequence[Variable], headers: Iterable[str]) -> list[str]:
    known = {v.name for v in form}
    return [h for h in headers if h not in known]


def _file_type(url: str, allowed: Sequence[str]) -> str:
    concrete = [t for t in allowed if t != "custom"]
    if len(concrete) == 1:
        return concrete[0]
    extension = urlsplit(url).path.rsplit(".", 1)[-1].lower() if "." in url else ""
    for kind, extensions in _EXTENSIONS.items():
        if extension in extensions and (not concrete or kind in concrete):
            return kind
    return "custom"


def _file(url: str, variable: Variable) -> dict[str, Any] | None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return {
        "type": _file_type(url, variable.file_types),
        "transfer_method": "remote_url",
        "url": url,
    }


def check_row(
    form: Sequence[Variable], inputs: dict[str, str]
) -> tuple[dict[str, Any], str | None]:
    """The inputs to send (file cells turned into file objects), or the reason the row cannot
    run, naming the column."""
    sent: dict[str, Any] = dict(inputs)
    for v in form:
        value = inputs.get(v.name, "")
        if not value.strip():
            if v.required:
                return sent, f"{CHECK_PREFIX}: {v.name!r} is required, but its cell is empty"
            continue
        if v.control == "select" and v.options and value not in v.options:
            return sent, (
                f"{CHECK_PREFIX}: {v.name!r} must be one of {', '.join(v.options)}; the cell "
                f"holds {value!r}"
            )
        if (
            v.max_length is not None
            and v.control not in FILE_CONTROLS
            and len(value) > v.max_length
        ):
            return sent, (
                f"{CHECK_PREFIX}: {v.name!r} allows at most {v.max_length} characters; the cell "
                f"holds {len(value)}"
            )
        if v.control == "number" and not _NUMBER.match(value):
            return sent, f"{CHECK_PREFIX}: {v.name!r} must be a number; the cell holds {value!r}"
        if v.control in FILE_CONTROLS:
            urls = [u.strip() for u in value.splitlines() if u.strip()]
            files = [_file(u, v) for u in urls]
            if not urls or any(f is None for f in files):
                return sent, (
                    f"{CHECK_PREFIX}: {v.name!r} takes a file: the cell must hold an http(s) URL"
                    + (" (one per line)" if v.control == "file-list" else "")
                )
            if v.control == "file" and len(files) > 1:
                return (
                    sent,
                    f"{CHECK_PREFIX}: {v.name!r} takes one file; the cell holds {len(files)} URLs",
                )
            sent[v.name] = files if v.control == "file-list" else files[0]
    return sent, None
