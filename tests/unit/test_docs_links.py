"""Every relative link and #anchor in README.md and docs/*.md leads somewhere (GitHub's slugs),
so moving a section never leaves a reader at a dead link."""

import collections
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def slugs(path: Path) -> set[str]:
    out: set[str] = set()
    seen: collections.Counter[str] = collections.Counter()
    fence = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            fence = not fence
            continue
        m = None if fence else re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        text = re.sub(r"`|\*\*|\[([^\]]*)\]\([^)]*\)", lambda g: g.group(1) or "", m.group(2))
        s = re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")
        n = seen[s]
        seen[s] += 1
        out.add(s if n == 0 else f"{s}-{n}")
    return out


def links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    return [t for t in re.findall(r"\]\(([^)\s]+)\)", text) if not re.match(r"[a-z]+:", t)]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_link_resolves(doc):
    broken = []
    for target in links(doc):
        path, _, anchor = target.partition("#")
        dest = (doc.parent / path).resolve() if path else doc
        if not dest.exists():
            broken.append(f"missing file {target}")
        elif anchor and dest.suffix == ".md" and anchor not in slugs(dest):
            broken.append(f"missing anchor {target}")
    assert not broken, broken


def test_the_readme_stays_short_enough_to_lead():
    # Issue #19: the path people follow, with the reference in docs/.
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) < 575
