"""The README and docs/: the configuration reference is what the settings generate, the README
gives the two commands and points at the reference, and no relative link is broken."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

from streamapp.settings import documented

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
CONFIGURATION = DOCS / "configuration.md"
REGENERATE = ".venv/bin/python tools/config_doc.py --write"
#: the README is read in five minutes; reference material belongs in docs/
README_MAX_BYTES = 8 * 1024
#: what the README must link to: the reference it no longer holds
README_LINKS = (
    "docs/configuration.md",
    "docs/messages.md",
    "docs/models.md",
    "docs/web-api.md",
    "docs/operations.md",
    "docs/benchmarks.md",
    "docs/development.md",
    "docs/ARCHITECTURE.md",
    "docs/security-kafka-k8s.md",
    "docs/dashboard.png",
    "k8s/README.md",
    "SECURITY.md",
)

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def _config_doc() -> ModuleType:
    """tools/config_doc.py, which is a script, not a package module."""
    spec = importlib.util.spec_from_file_location("config_doc", ROOT / "tools" / "config_doc.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _prose(text: str) -> str:
    """The text without fenced code blocks, whose brackets are not links."""
    return _FENCE.sub("", text)


def _links(path: Path) -> list[str]:
    return _LINK.findall(_prose(path.read_text()))


def _anchors(path: Path) -> set[str]:
    """GitHub's anchors of a Markdown file's headings: lower case, punctuation dropped, spaces
    as hyphens, '-1', '-2' for repeats."""
    seen: dict[str, int] = {}
    anchors = set()
    for heading in _HEADING.findall(_prose(path.read_text())):
        text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
        slug = re.sub(r"[^\w\- ]", "", text).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def _documents() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def test_the_configuration_reference_is_generated_from_the_settings() -> None:
    expected = _config_doc().render()
    actual = CONFIGURATION.read_text() if CONFIGURATION.exists() else ""
    assert actual == expected, (
        f"{CONFIGURATION.relative_to(ROOT)} is not what streamapp/settings.py generates; "
        f"regenerate it with: {REGENERATE}"
    )


def test_every_setting_is_in_the_reference_with_its_default() -> None:
    text = CONFIGURATION.read_text()
    for name, default, _ in documented():
        shown = f"`{default}`" if default else "(empty)"
        assert f"| `{name}` | {shown} |" in text, f"{name}: regenerate with {REGENERATE}"


def test_the_readme_gives_the_two_commands() -> None:
    text = README.read_text()
    blocks = "".join(re.findall(r"^```bash\n(.*?)^```", text, re.DOTALL | re.MULTILINE))
    makefile = (ROOT / "Makefile").read_text()
    for command in ("make run", "make test"):
        assert re.search(rf"^{command}\b", blocks, re.MULTILINE), f"`{command}` is not in a bash block"
        target = command.split()[1]
        assert re.search(rf"^{target}:", makefile, re.MULTILINE), f"the Makefile has no {target!r} target"


def test_the_readme_is_short_and_links_to_the_reference() -> None:
    size = len(README.read_bytes())
    assert size <= README_MAX_BYTES, (
        f"README.md is {size} bytes, over {README_MAX_BYTES}: move reference material to docs/"
    )
    links = {link.split("#", 1)[0] for link in _links(README)}
    missing = [target for target in README_LINKS if target not in links]
    assert not missing, f"README.md does not link to {missing}"


def test_every_relative_link_points_to_an_existing_file_and_heading() -> None:
    broken = []
    for document in _documents():
        for link in _links(document):
            if re.match(r"[a-z][a-z0-9+.-]*:", link, re.IGNORECASE):
                continue  # https:, mailto:
            path, _, anchor = link.partition("#")
            target = (document.parent / path).resolve() if path else document
            where = f"{document.relative_to(ROOT)}: {link}"
            if not target.exists():
                broken.append(f"{where} (no such file)")
            elif anchor and target.suffix == ".md" and anchor not in _anchors(target):
                broken.append(f"{where} (no heading #{anchor} in {target.relative_to(ROOT)})")
    assert not broken, "broken links:\n" + "\n".join(broken)
