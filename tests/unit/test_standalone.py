"""The repository stands alone: no file points at reference material outside it, and
every ``docs/<file>.md[#anchor]`` reference points at a doc (and heading) that exists.

Facts the code relies on live in ``docs/`` (``docs/agent-clis.md``, ``docs/backends.md``);
code, pattern notes and tests link to their sections.
"""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SKIP_DIRS = {".git", ".venv", ".cache", "__pycache__", "node_modules", ".pytest_cache"}

# Built from pieces so that this file does not match itself.
FORBIDDEN = (
    "shared" + "/",            # the reference folder next to the repository
    "agent-cli" + "-facts",    # its notes, by name
    "field" + "-notes",
)

DOC_REF_RE = re.compile(r"(?<![\w/.-])docs/([\w.-]+\.md)(?:#([\w-]+))?")
MD_LINK_RE = re.compile(r"\]\(([\w.-]+\.md)(?:#([\w-]+))?\)")


def repo_files() -> list[Path]:
    """Tracked files (``git ls-files``), or every file under the root outside
    :data:`SKIP_DIRS` when git cannot list them."""
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                             check=True, timeout=30).stdout
        files = [ROOT / p for p in out.decode("utf-8", "surrogateescape").split("\0") if p]
        if files:
            return [f for f in files if f.is_file()]
    except (OSError, subprocess.SubprocessError):
        pass
    found = []
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS]
        found.extend(Path(dirpath) / f for f in filenames)
    return found


def text_lines(path: Path) -> list[str]:
    """The file's lines, or ``[]`` for a binary or undecodable file."""
    try:
        data = path.read_bytes()
    except OSError:
        return []
    if b"\0" in data[:8192]:
        return []
    try:
        return data.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        return []


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading: lower case, punctuation dropped, spaces
    turned into dashes."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(md: Path) -> set[str]:
    out: set[str] = set()
    in_code = False
    for line in text_lines(md):
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and line.startswith("#"):
            out.add(slug(line.lstrip("#")))
    out.update(re.findall(r'<a (?:id|name)="([^"]+)"', "\n".join(text_lines(md))))
    return out


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_no_file_refers_to_material_outside_the_repository():
    bad = []
    for path in repo_files():
        for n, line in enumerate(text_lines(path), 1):
            low = line.lower()
            for word in FORBIDDEN:
                if word in low:
                    bad.append(f"{rel(path)}:{n}: {word!r}: {line.strip()[:120]}")
    assert not bad, ("these lines point outside the repository; write the fact into docs/ "
                     "and link its section instead:\n" + "\n".join(bad))


def test_docs_references_point_at_existing_docs_and_headings():
    docs = ROOT / "docs"
    cache: dict[Path, set[str]] = {}
    bad = []
    for path in repo_files():
        refs = []
        for n, line in enumerate(text_lines(path), 1):
            refs += [(n, docs / f, a) for f, a in DOC_REF_RE.findall(line)]
            if path.suffix == ".md":  # relative Markdown links, e.g. [x](backends.md#y)
                refs += [(n, path.parent / f, a) for f, a in MD_LINK_RE.findall(line)]
        for n, target, anchor in refs:
            if not target.is_file():
                bad.append(f"{rel(path)}:{n}: {rel(target)} does not exist")
                continue
            if anchor and anchor not in cache.setdefault(target, anchors(target)):
                bad.append(f"{rel(path)}:{n}: {rel(target)} has no heading for #{anchor}")
    assert not bad, "\n".join(bad)


def test_the_checks_see_a_planted_reference(tmp_path):
    """The scanners are not vacuous: a forbidden word and a dead doc link are caught."""
    planted = tmp_path / "x.py"
    planted.write_text("# see ../" + "shared" + "/notes\n# " + "docs/" + "no-such-file.md\n", encoding="utf-8")
    lines = text_lines(planted)
    assert any(w in lines[0] for w in FORBIDDEN)
    assert DOC_REF_RE.findall(lines[1]) == [("no-such-file.md", "")]
    assert slug(" Enter after paste") == "enter-after-paste"
    assert slug("Remedies end to end (`tests/e2e/x.py`)") == "remedies-end-to-end-testse2expy"
    assert "enter-after-paste" in anchors(ROOT / "docs" / "agent-clis.md")
    assert "no-such-heading" not in anchors(ROOT / "docs" / "agent-clis.md")
