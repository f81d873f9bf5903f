"""Pure: check sheet rows against the workflow's input form (`GET /v1/parameters`) before
anything runs, and turn cells into the values Dify expects (file URLs into file objects,
JSON cells into objects, blank cells left out).

The rules are the server's own, read in Dify 1.14.1's source (`BaseAppGenerator.
_validate_inputs` and `factories/file_factory`) and tried against it: a row this check passes
is one Dify runs, and a row it refuses is one Dify would refuse (checking first costs no run,
and the reason names the cell). What only Dify can know (whether a file's host answers, the
file type it detects from the host's answer) is left to Dify.
"""

from __future__ import annotations

import json
import mimetypes
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from shared.core.errors import ConfigError

CHECK_PREFIX = "input_check"  # the `error` of rows the check failed: re-run once fixed
FILE_CONTROLS = frozenset({"file", "file-list"})
TEXT_CONTROLS = frozenset({"text-input", "paragraph"})  # the only ones max_length counts chars of
# Dify's file-type detection by extension (graphon/file/constants.py, case-insensitive).
_EXTENSIONS = {
    "image": {"jpg", "jpeg", "png", "webp", "gif", "svg"},
    "video": {"mp4", "mov", "mpeg", "webm"},
    "audio": {"mp3", "m4a", "wav", "amr", "mpga"},
    "document": {
        "txt", "markdown", "md", "mdx", "pdf", "html", "htm", "xlsx", "xls", "vtt", "properties",
        "doc", "docx", "csv", "eml", "msg", "ppt", "pptx", "xml", "epub",
    },
}  # fmt: skip
FILE_TYPES = frozenset({*_EXTENSIONS, "custom"})
# A form nested or sized past these is not one Dify sends: refused, not walked.
MAX_FORM_VARIABLES = 1000
MAX_OPTIONS = 10_000


class FormError(ConfigError):
    """The input form Dify answered cannot be read as one (wrong types, absurd sizes)."""


@dataclass(frozen=True)
class Variable:
    name: str
    control: str  # text-input, paragraph, select, number, file, file-list, json_object, ...
    required: bool = False
    max_length: int | None = None
    options: tuple[str, ...] = ()
    file_types: tuple[str, ...] = ()
    file_extensions: tuple[str, ...] = ()
    upload_methods: tuple[str, ...] = ()


def _strings(where: str, key: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise FormError(f"{where}: `{key}` must be a list of strings, got {_kind(value)}")
    if len(value) > MAX_OPTIONS:
        raise FormError(f"{where}: `{key}` lists {len(value)} items (at most {MAX_OPTIONS})")
    return tuple(value)


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def parse_form(payload: Any) -> list[Variable]:
    """`user_input_form` of a /parameters answer: a list of one-key objects, control -> spec.
    Raises FormError, naming the item and the field, for anything typed otherwise than Dify
    types it (a string `required`, a number for `options`, ...): a misread form would refuse
    good rows or pass bad ones."""
    if not isinstance(payload, dict):
        raise FormError(f"the answer is a JSON {_kind(payload)}, not an object")
    form = payload.get("user_input_form")
    if form is None:
        return []
    if not isinstance(form, list):
        raise FormError(f"`user_input_form` must be a list, got {_kind(form)}")
    if len(form) > MAX_FORM_VARIABLES:
        raise FormError(f"`user_input_form` has {len(form)} items (at most {MAX_FORM_VARIABLES})")
    variables = []
    for index, item in enumerate(form):
        where = f"user_input_form[{index}]"
        if not isinstance(item, dict) or len(item) != 1:
            raise FormError(f"{where} must be an object with one key (the control)")
        ((control, spec),) = item.items()
        if not isinstance(spec, dict):
            raise FormError(f"{where} ({control}) must hold an object, got {_kind(spec)}")
        name = spec.get("variable")
        if not name:
            continue  # a control without a variable takes no input
        if not isinstance(name, str):
            raise FormError(f"{where}: `variable` must be a string, got {_kind(name)}")
        where = f"{where} ({control} {name!r})"
        required = spec.get("required", False)
        if not isinstance(required, bool):
            raise FormError(f"{where}: `required` must be true or false, got {required!r:.40}")
        max_length = spec.get("max_length")
        if max_length is not None and (
            isinstance(max_length, bool) or not isinstance(max_length, int)
        ):
            raise FormError(
                f"{where}: `max_length` must be a whole number, not {_kind(max_length)}"
            )
        variables.append(
            Variable(
                name=name,
                control=control,
                required=required,
                max_length=max_length if max_length else None,  # 0 or absent: no limit
                options=_strings(where, "options", spec.get("options")),
                file_types=_strings(where, "allowed_file_types", spec.get("allowed_file_types")),
                file_extensions=_strings(
                    where, "allowed_file_extensions", spec.get("allowed_file_extensions")
                ),
                upload_methods=_strings(
                    where, "allowed_file_upload_methods", spec.get("allowed_file_upload_methods")
                ),
            )
        )
    return variables


def missing_required(form: Sequence[Variable], headers: Iterable[str]) -> list[str]:
    present = set(headers)
    return [v.name for v in form if v.required and v.name not in present]


def unknown_columns(form: Sequence[Variable], headers: Iterable[str]) -> list[str]:
    known = {v.name for v in form}
    return [h for h in headers if h not in known]


def without_blanks(inputs: dict[str, Any]) -> dict[str, Any]:
    """Blank cells left out: Dify counts only a missing key as missing, so `""` for an
    optional select or number is refused, while a left-out key takes the default."""
    return {k: v for k, v in inputs.items() if not (isinstance(v, str) and not v.strip())}


def _extension(url: str) -> str:
    name = unquote(urlsplit(url).path).rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[-1].lower() if "." in name else ""


def _detected(extension: str) -> str | None:
    for kind, extensions in _EXTENSIONS.items():
        if extension in extensions:
            return kind
    return None


def _file(url: str, v: Variable) -> dict[str, Any] | str:
    """The file object Dify takes for `url`, or why Dify would refuse it.

    Dify (service API: strict type check) refuses a file whose `type` is not the type it
    detects (from the file's name, else the host's content type), and one whose type the
    variable does not allow unless `custom` is allowed and its extension is listed."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return "the cell must hold an http(s) URL"
    if v.upload_methods and "remote_url" not in v.upload_methods:
        return "the workflow takes only uploaded files there, not URLs (allow `URL` in its form)"
    name = unquote(parts.path).rsplit("/", 1)[-1]
    extension = _extension(url)
    if not mimetypes.guess_type(name)[0]:
        # A name without a type Python (and so Dify) knows: Dify goes by the host's content
        # type, which only it sees. The one concrete type the variable allows is the best
        # guess (a text/plain answer is a document); `custom` when that is all it takes.
        concrete = [t for t in v.file_types if t != "custom"]
        guess = concrete[0] if concrete else "custom"
        return {"type": guess, "transfer_method": "remote_url", "url": url}
    detected = detected_type(name, "")
    allowed = set(v.file_types)
    listed = {e.lower().lstrip(".") for e in v.file_extensions}
    if not allowed or (detected in allowed and detected != "custom"):
        return {"type": detected, "transfer_method": "remote_url", "url": url}
    if "custom" in allowed and extension in listed:
        return {"type": detected, "transfer_method": "remote_url", "url": url}
    kinds = ", ".join(sorted(allowed - {"custom"})) or "custom"
    if "custom" in allowed:
        kinds += f" files, or ones named {', '.join(sorted(listed)) or '(no extension listed)'}"
    else:
        kinds += " files"
    return f"it takes {kinds}; {url!r} names a .{extension} file ({detected})"


def _number_error(value: str) -> bool:
    """Dify's own conversion: float() when the text has a dot, else int() (so `1e5` is
    refused and `1_000` taken)."""
    try:
        float(value) if "." in value else int(value)
    except ValueError:
        return True
    return False


def check_row(
    form: Sequence[Variable], inputs: dict[str, str]
) -> tuple[dict[str, Any], str | None]:
    """The inputs to send (blank cells left out, file cells as file objects, JSON cells as
    objects), or the reason the row cannot run, naming the column."""
    sent: dict[str, Any] = without_blanks(inputs)
    for v in form:
        value = sent.get(v.name)
        if value is None:
            if v.required:
                return sent, f"{CHECK_PREFIX}: {v.name!r} is required, but its cell is empty"
            continue
        reason = _refusal(v, value, sent)
        if reason:
            return sent, f"{CHECK_PREFIX}: {v.name!r} {reason}"
    return sent, None


def _refusal(v: Variable, value: str, sent: dict[str, Any]) -> str | None:
    if v.control == "select" and value not in v.options:
        return f"must be one of {', '.join(v.options)}; the cell holds {value!r:.200}"
    if v.control in TEXT_CONTROLS and v.max_length is not None and len(value) > v.max_length:
        return f"allows at most {v.max_length} characters; the cell holds {len(value)}"
    if v.control == "number" and _number_error(value):
        return (
            f"must be a number (like 12, -3.5 or 1_000; Dify refuses 1e5); the cell holds "
            f"{value!r:.200}"
        )
    if v.control == "json_object":
        try:
            parsed = json.loads(value)
        except (ValueError, RecursionError):
            parsed = None
        if not isinstance(parsed, dict):
            return 'must hold a JSON object, like {"key": "value"}'
        sent[v.name] = parsed
    if v.control in FILE_CONTROLS:
        urls = [u.strip() for u in value.splitlines() if u.strip()]
        if v.control == "file" and len(urls) > 1:
            return f"takes one file; the cell holds {len(urls)} URLs"
        if v.control == "file-list" and v.max_length and len(urls) > v.max_length:
            return f"takes at most {v.max_length} files; the cell holds {len(urls)} URLs"
        files = []
        for url in urls:
            made = _file(url, v)
            if isinstance(made, str):
                return f"takes a file: {made}" + (
                    " (one URL per line)" if v.control == "file-list" else ""
                )
            files.append(made)
        sent[v.name] = files if v.control == "file-list" else files[0]
    return None


def refusal(form: Sequence[Variable], inputs: dict[str, Any]) -> str | None:
    """Why Dify 1.14.1 would refuse these inputs as sent (its own rules and words, from
    BaseAppGenerator._validate_inputs and the file factory), or None. What needs the file's
    host (its detected type, whether it answers) is not judged here."""
    for v in form:
        value = inputs.get(v.name)
        if value is None:
            if v.required:
                return f"{v.name} is required in input form"
            continue
        if v.control in ("text-input", "select", "paragraph") and not isinstance(value, str):
            return f"(type '{v.control}') {v.name} in input form must be a string"
        if (
            v.control == "number"
            and isinstance(value, str)
            and value.strip()
            and _number_error(value)
        ):
            return f"{v.name} in input form must be a valid number"
        if v.control == "select" and value not in v.options:
            return f"{v.name} in input form must be one of the following: {list(v.options)}"
        if v.control in TEXT_CONTROLS and v.max_length and len(value) > v.max_length:
            return f"{v.name} in input form must be less than {v.max_length} characters"
        if v.control == "json_object" and value and not isinstance(value, dict):
            return f"{v.name} in input form must be a dict"
        files = [value] if v.control == "file" else value if v.control == "file-list" else None
        if files is None:
            continue
        if v.control == "file" and not isinstance(value, dict):
            return f"{v.name} in input form must be a file"
        if not isinstance(files, list) or not all(isinstance(f, dict) for f in files):
            return f"{v.name} in input form must be a list of files"
        if v.control == "file-list" and v.max_length and len(files) > v.max_length:
            return f"{v.name} in input form must be less than {v.max_length} files"
        for f in files:
            kind = f.get("type") or "custom"
            if v.file_types and kind not in v.file_types and "custom" not in v.file_types:
                return f"File validation failed for file: {f.get('url')}"
            if v.upload_methods and f.get("transfer_method") not in v.upload_methods:
                return f"File validation failed for file: {f.get('url')}"
    return None


def remote_files(form: Sequence[Variable], inputs: dict[str, Any]) -> list[dict[str, Any]]:
    """The remote-URL file objects among the inputs (Dify fetches their headers first)."""
    found: list[dict[str, Any]] = []
    for v in form:
        value = inputs.get(v.name)
        items = value if isinstance(value, list) else [value]
        if v.control in FILE_CONTROLS:
            found += [
                f for f in items if isinstance(f, dict) and f.get("transfer_method") == "remote_url"
            ]
    return found


def detected_type(name: str, content_type: str) -> str:
    """The file type Dify detects for a remote file, from the name it settles on (the URL's, or
    the host's Content-Disposition) and its MIME type (guessed from that name, else the host's
    Content-Type): graphon's standardize_file_type after file_factory's extension choice."""
    mime = mimetypes.guess_type(name)[0] or content_type.split(";")[0].strip()
    extension = mimetypes.guess_extension(mime) if mime else None
    if not extension:
        extension = "." + name.rsplit(".", 1)[-1] if "." in name else ".bin"
    kind = _detected(extension.lstrip(".").lower())
    if kind is not None:
        return kind
    for marker, guess in (("image", "image"), ("video", "video"), ("audio", "audio")):
        if marker in mime:
            return guess
    if "text" in mime or "pdf" in mime:
        return "document"
    return "custom"
