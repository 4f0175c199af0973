"""The README and docs/ quote the committed record, never a hand-typed measurement.

(a) every generated block regenerates byte for byte from the committed results; (b) every number
the prose quotes as a measurement matches a committed value at its printed precision; (c) the
check fails on a constructed page with a wrong number or a stale block; (d) the README's Python
example runs, and its plug-in excerpt is the example plug-in's own code.
"""

import re
import shutil
from pathlib import Path

import pytest

from adapters.api.errors import InputError
from harness import docs
from harness.cli import COMMANDS, main

REPO = Path(__file__).resolve().parents[2]
PAGES = docs.doc_pages(REPO)


@pytest.fixture(scope="module")
def record():
    return docs.Record(REPO)


@pytest.fixture(scope="module")
def facts(record):
    return docs.all_facts(record)


@pytest.fixture
def checkout(tmp_path):
    """A copy of the pages and the committed results, to break."""
    for part in ("README.md", "docs", "results"):
        (shutil.copytree if (REPO / part).is_dir() else shutil.copy)(REPO / part, tmp_path / part)
    return tmp_path


def python_blocks(page: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", page.read_text(encoding="utf-8"), re.S | re.M)


def test_the_pages_are_the_readme_and_one_per_topic():
    names = {p.relative_to(REPO).as_posix() for p in PAGES}
    topics = ("timing", "checkpoints", "decoding", "metrics", "distributed-eval", "tracks", "jax-tpu", "architecture",
              "imagenet-recipe")
    assert names == {"README.md", *(f"docs/{t}.md" for t in topics)}
    assert "docs" in COMMANDS


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_generated_block_regenerates_from_the_committed_results(page, record):
    text = page.read_text(encoding="utf-8")
    assert docs.render(text, record) == text, f"{page} is stale: run `nfebench docs`"


def test_every_renderer_is_shown_somewhere():
    shown = {name for p in PAGES for name, _, _ in docs.blocks_in(p.read_text(encoding="utf-8"))}
    assert shown == set(docs.BLOCKS)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_quoted_measurement_matches_the_committed_results(page, record, facts):
    bad = docs.unmatched_quotes(page.read_text(encoding="utf-8"), record, facts)
    assert not bad, "\n".join(f"{page.name}:{q.line}: {q.text} ({q.unit}) is in no committed result" for q in bad)


def test_the_quote_check_has_quotes_to_check():
    # the prose does quote measurements (so the test above is not vacuous), of several kinds
    found = [q for p in PAGES for q in docs.quotes(p.read_text(encoding="utf-8"))]
    assert {"x", "ms", "s", "min", "%", "GFLOP/s", "quality"} <= {q.unit for q in found}
    assert len([q for q in found if f"{q.text}{q.unit}" not in docs.ALLOWED]) >= 15


def test_a_wrong_number_in_prose_is_caught(record, facts):
    page = ("BiFlow-B/2 ran 30.6x [29.6, 31.4] faster at batch 1, in 336 ms per image; the mini teacher's "
            "FID 50.4.\n\nBut it was 31.9x faster, in 9.1 s, with FID 47.5 and 4.4 images/s (measured: 3.7e-7).\n\n"
            "Not quotes: `--max-time 30` and\n\n```bash\nnfebench bench --ci-target 0.02  # 12.5 ms\n```\n\n"
            "<!-- 99.9x in a comment -->, an 8x8 image, FID-50K, a 95% interval.\n")
    bad = docs.unmatched_quotes(page, record, facts)
    assert [(q.text, q.unit, q.line) for q in bad] == [
        ("31.9", "x", 3), ("9.1", "s", 3), ("47.5", "quality", 3), ("4.4", "images/s", 3), ("3.7e-7", "any", 3)]


def test_a_number_holds_only_at_its_printed_precision():
    facts = [docs.Fact("ratio", 30.554), docs.Fact("ms", 10271.68), docs.Fact("fraction", 0.7887)]
    assert docs.holds(docs.Quote("30.6", "x", 1), facts) and docs.holds(docs.Quote("31", "x", 1), facts)
    assert not docs.holds(docs.Quote("30.5", "x", 1), facts) and not docs.holds(docs.Quote("30.56", "x", 1), facts)
    assert docs.holds(docs.Quote("10.3", "s", 1), facts) and docs.holds(docs.Quote("10272", "ms", 1), facts)
    assert not docs.holds(docs.Quote("10.3", "ms", 1), facts)  # units are not mixed up
    assert docs.holds(docs.Quote("79", "%", 1), facts) and not docs.holds(docs.Quote("78", "%", 1), facts)
    assert not docs.holds(docs.Quote("30.6", "quality", 1), facts)  # a speed-up is not a FID


def test_a_stale_block_is_caught_and_regenerated_in_place(checkout, capsys):
    assert main(["docs", "--check", "--root", str(checkout)]) == 0
    page = checkout / "docs" / "timing.md"
    fresh = page.read_text(encoding="utf-8")
    row = next(line for line in fresh.splitlines() if line.startswith("| `biflow-b2` | "))
    cell = row.split(" | ")[1]  # its measured ms per image [95%], as generated
    page.write_text(fresh.replace(row, row.replace(cell, "301 [297, 305]", 1)), encoding="utf-8")
    capsys.readouterr()
    assert main(["docs", "--check", "--root", str(checkout)]) == 1
    assert "timing.md: stale" in capsys.readouterr().out
    assert "301 [297, 305]" in page.read_text(encoding="utf-8")  # --check writes nothing
    assert main(["docs", "--root", str(checkout)]) == 0
    assert page.read_text(encoding="utf-8") == fresh
    assert not list(page.parent.glob(".*.tmp"))  # written through a temporary file and a rename


def test_a_quoted_number_the_record_lacks_fails_the_check(checkout, capsys):
    page = checkout / "docs" / "tracks.md"
    page.write_text(page.read_text(encoding="utf-8") + "\nThe student is 19.5x faster.\n", encoding="utf-8")
    assert main(["docs", "--check", "--root", str(checkout)]) == 1
    assert "tracks.md" in capsys.readouterr().out


def test_unknown_and_unclosed_blocks_are_input_errors(record):
    with pytest.raises(InputError, match="unknown generated block 'mini-modles'"):
        docs.render("<!-- nfebench:begin mini-modles -->\n<!-- nfebench:end mini-modles -->\n", record)
    with pytest.raises(InputError, match="no end marker"):
        docs.render("<!-- nfebench:begin mini-models -->\nno end\n", record)
    with pytest.raises(InputError, match="no results/runs"):
        docs.Record(REPO / "docs")


def test_the_mini_table_names_the_committed_leaderboards_models(record):
    # Moved from test_leaderboard.py (the README's mini table now lives in docs/tracks.md as a
    # generated block): the table shows each model of leaderboard-mini.csv at its default options,
    # float32 and bfloat16, with the trained FID at one decimal.
    board = record.csv("leaderboard-mini.csv")
    board = board[board.options == ""]
    block = docs.mini_models(record).text
    assert block in (REPO / "docs" / "tracks.md").read_text(encoding="utf-8")
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in block.splitlines() if line.startswith("| `")]
    assert sorted((r[0].strip("`"), r[1]) for r in rows) == sorted(zip(board.model, board.dtype))
    for r in rows:
        cell = board[(board.model == r[0].strip("`")) & (board.dtype == r[1])].iloc[0]
        assert float(r[3].split()[0]) == pytest.approx(float(cell.fid), abs=0.05)
        assert int(r[2]) == int(cell.train_steps)


def test_the_quick_start_is_the_two_commands_in_order():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    quick = text[text.index("## Quick start"):text.index("\n## ", text.index("## Quick start") + 1)]
    commands = re.findall(r"^```bash\n(.*?)\n```", quick, re.S | re.M)
    assert commands == ["pip install tox && tox -e bench", "pip install tox && tox -e test"]


def test_the_readme_python_example_runs(capsys):
    runnable = [b for b in python_blocks(REPO / "README.md") if "(abridged)" not in b.splitlines()[0]]
    assert len(runnable) == 1
    exec(compile(runnable[0], "README.md", "exec"), {})
    assert "biflow-mini 1 random-init (8, 3, 8, 8)" in capsys.readouterr().out


@pytest.mark.slow
def test_the_decoding_example_runs(capsys):
    (block,) = python_blocks(REPO / "docs" / "decoding.md")
    exec(compile(block, "docs/decoding.md", "exec"), {})
    passes = eval(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(passes) == 4 and all(1 <= p <= 15 for p in passes)  # tarflow-mini: 4 blocks of 16 tokens


def test_the_readme_plugin_excerpt_is_the_plugin_s_own_code():
    (excerpt,) = [b for b in python_blocks(REPO / "README.md") if "(abridged)" in b.splitlines()[0]]
    source = REPO / excerpt.splitlines()[0].split()[1]
    lines = {line.strip() for line in source.read_text(encoding="utf-8").splitlines()}
    shown = [line.strip() for line in excerpt.splitlines()[1:] if line.strip() and line.strip() != "..."]
    assert [line for line in shown if line not in lines] == []
    toml = (source.parents[1] / "pyproject.toml").read_text(encoding="utf-8")
    assert '[project.entry-points."nfebench.adapters"]\ntinyconv = "tinyconv"' in toml
