"""The documentation: the configuration reference is what the schema generates now, the README stays short,
and every relative link of the README and docs/ reaches a file and, with a #fragment, one of its headings."""
from __future__ import annotations

import dataclasses
import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path

from cyclegan.core import reference

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def test_the_configuration_reference_is_what_the_schema_generates():
    written = (DOCS / "configuration.md").read_text()
    generated = reference.render()
    diff = "".join(list(difflib.unified_diff(written.splitlines(True), generated.splitlines(True),
                                             "docs/configuration.md", "generated now"))[:60])
    assert written == generated, f"docs/configuration.md is not the schema's; regenerate it with\n    " \
                                 f"{reference.COMMAND}\n{diff}"


def test_the_reference_shows_every_field_and_every_key_of_its_metadata():
    """A role added to the schema's metadata later appears without a change to the generator."""
    @dataclass
    class Planted:
        # --- first ---
        a: int = field(default=1, metadata={"help": "an a", "minimum": 0, "commands": ("train",),
                                            "rerun": "keep", "searchable": True, "shapes": False})
        # --- second ---
        b: str = field(default="x|y", metadata={"help": "a <b>", "choices": ("x|y", "z")})
    page = "\n".join(reference.section(Planted, "###", {"a": 2}))
    assert page.index("### first") < page.index("`a`") < page.index("### second") < page.index("`b`")
    row_a = next(line for line in page.splitlines() if line.startswith("| `a`"))
    assert "`rerun`: `keep`" in row_a and "`searchable`" in row_a and "shapes" not in row_a
    assert "`1`; test time: `2`" in row_a and "≥ `0`" in row_a and "| train |" in row_a
    row_b = next(line for line in page.splitlines() if line.startswith("| `b`"))
    assert r"a \<b>" in row_b and r"`x\|y`, `z`" in row_b
    assert row_b.count(" | ") == row_a.count(" | ")  # the same columns in every row


def test_every_option_and_search_setting_has_a_row():
    from cyclegan.core.config import FIELDS
    from cyclegan.core.experiment import Search
    page = reference.render()
    names = list(FIELDS) + [f.name for f in dataclasses.fields(Search)]
    missing = [name for name in names if f"| `{name}` |" not in page]
    assert not missing and len(names) > 80, missing


def slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation but '-' and '_' dropped, spaces to '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_the_readme_is_short_and_every_relative_link_resolves():
    readme = ROOT / "README.md"
    assert len(readme.read_text().splitlines()) <= 200
    pages = [readme, *sorted(DOCS.glob("*.md"))]
    checked, broken = 0, []
    for page in pages:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # links inside code blocks are code
        for target in LINK.findall(text):
            if re.match(r"[a-z]+:", target):
                continue  # http:, mailto:
            path, _, fragment = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            checked += 1
            if not file.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif fragment and file.suffix == ".md":
                anchors = {slug(h) for h in re.findall(r"^#+ (.+)$", file.read_text(), re.M)}
                if fragment not in anchors:
                    broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert checked > 10, f"only {checked} links found in {len(pages)} pages"
    assert not broken, "\n".join(broken)
