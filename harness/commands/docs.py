"""`nfebench docs`: regenerate the tables of the README and docs/ from the committed results.

Each ``<!-- nfebench:begin NAME -->`` ... ``<!-- nfebench:end NAME -->`` block of README.md and
docs/*.md is rewritten in place (each page atomically) from results/ (`harness.docs`). ``--check``
writes nothing and exits 1 when a block is stale or the prose quotes a measured number that no
committed result holds.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from harness import docs


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", default=".", help="the repository checkout: README.md, docs/ and results/ "
                                               "(default: the current folder)")
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 if a generated block is stale or a quoted measurement matches no "
                        "committed result")


def run(args: argparse.Namespace) -> int:
    root = Path(args.root)
    changed = docs.update_docs(root, write=not args.check)
    for page in changed:
        print(f"{page}: {'stale, run `nfebench docs`' if args.check else 'regenerated'}")
    if not args.check:
        print(f"{len(docs.doc_pages(root))} pages, {len(changed)} regenerated")
        return 0
    record = docs.Record(root)
    facts = docs.all_facts(record)
    bad = [(page, q) for page in docs.doc_pages(root)
           for q in docs.unmatched_quotes(page.read_text(encoding="utf-8"), record, facts)]
    for page, q in bad:
        print(f"{page}:{q.line}: {q.text} ({q.unit}) matches no committed result")
    return 1 if changed or bad else 0
