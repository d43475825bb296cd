"""Writes the generated sections of the README and the docs, so their numbers cannot go stale.

A generated section lies between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->`` in one of DOCS; SECTIONS
maps each NAME to the function that renders it from the repository (tools/docs_results.py: runs of the demo
and the validator; tools/docs_benchmarks.py: bench_* records; tools/docs_reference.py: settings, the paper's
numbers, size estimates). A section may move between the docs without a change here; every NAME must be in
exactly one of them.

    python tools/docs_sections.py            # rewrite every doc between each pair of markers
    python tools/docs_sections.py --check    # exit 1 when a doc and its sources disagree

tests/test_docs_sections.py runs the check.
"""
import argparse
import os
import re
import sys

import docs_benchmarks
import docs_reference
import docs_results
from m3net.errors import ConfigError

DOCS = ("README.md", os.path.join("docs", "results.md"), os.path.join("docs", "reproducing.md"))
# NAME -> the markdown of that section, from the repository root
SECTIONS = {
    "demo-results": docs_results.render_demo_section,
    "table1-synthetic": docs_results.render_table1_section,
    "table1-cap-check": docs_results.render_table1_cap_check,
    "synthetic-validation": docs_results.render_synthetic_validation,
    "benchmark-results": docs_benchmarks.render_benchmarks,
    "frames-footprint": docs_reference.render_frames_footprint,
    "extract-splits": lambda root: docs_reference.render_extract_splits(),
    "paper-table1": lambda root: docs_reference.render_paper_table1(),
    "paper-ablations": lambda root: docs_reference.render_paper_ablations(),
    "reference-recipes": lambda root: docs_reference.reference_table(),
    "settings": lambda root: docs_reference.settings_table(),
}
MARKER = re.compile(r"<!-- ([a-z0-9-]+):(?:begin|end) -->")


def replace_section(text, section, name):
    """``text`` with what lies between the ``name`` markers replaced by ``section``."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    if text.count(begin) != 1 or text.count(end) != 1 or text.index(begin) > text.index(end):
        raise ConfigError(f"expected one {begin} ... {end} pair")
    head, rest = text.split(begin)
    _, tail = rest.split(end)
    return f"{head}{begin}\n{section}\n{end}{tail}"


def expected_docs(root):
    """{doc path relative to ``root``: (its current text, its text with every generated section rebuilt)}.
    Raises ConfigError when a doc holds a marker of no known section, or a section is in no doc or in several."""
    docs, found = {}, {}
    for path in DOCS:
        with open(os.path.join(root, path), encoding="utf-8") as fh:
            current = fh.read()
        names = set(MARKER.findall(current))
        unknown = names - set(SECTIONS)
        if unknown:
            raise ConfigError(f"{path}: markers of no known section: {', '.join(sorted(unknown))}")
        expected = current
        for name in sorted(names):
            found.setdefault(name, []).append(path)
            expected = replace_section(expected, SECTIONS[name](root), name)
        docs[path] = current, expected
    misplaced = {name: found.get(name, []) for name in SECTIONS if len(found.get(name, [])) != 1}
    if misplaced:
        raise ConfigError("every generated section must be in exactly one doc: " + "; ".join(
            f"{name} in {', '.join(paths) or 'none'}" for name, paths in misplaced.items()))
    return docs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=".", help="repository root (README.md, docs/, benchmarks/)")
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when a doc is stale")
    args = parser.parse_args(argv)
    docs = expected_docs(args.root)
    stale = [path for path, (current, expected) in docs.items() if current != expected]
    if args.check:
        if stale:
            print(f"generated sections differ from their sources in {', '.join(stale)}: run "
                  "`python tools/docs_sections.py`")
            return 1
        return 0
    for path in stale:
        with open(os.path.join(args.root, path), "w", encoding="utf-8") as fh:
            fh.write(docs[path][1])
        print("rewrote", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
