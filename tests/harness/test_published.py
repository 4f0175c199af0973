"""results/published.csv: internal consistency, anchors, and (where the reference notes sit beside
the clone) a cross-check of every figure against /work/shared/reference/published-results.md."""

import json
import math
import re
from pathlib import Path

import pytest

from harness.leaderboard import read_published
from harness.results import FID, IS, MS_PER_IMAGE

REPO = Path(__file__).resolve().parents[2]
PUBLISHED = REPO / "results" / "published.csv"
NOTES = REPO.parent / "shared" / "reference" / "published-results.md"


@pytest.fixture(scope="module")
def rows():
    return read_published(PUBLISHED)  # validates columns, source, evidence, status, duplicates


def find(rows, model, metric, nfe=None, **setting):
    hits = [r for r in rows if r["model"] == model and r["metric"] == metric and (nfe is None or r["nfe"] == nfe)
            and all(r[k] == v for k, v in setting.items())]
    assert len(hits) == 1, (model, metric, nfe, setting, len(hits))
    return hits[0]


@pytest.mark.parametrize("model,metric,nfe,value,evidence,cite", [
    ("biflow-b2", FID, "1", 2.39, "secondary", "arXiv 2512.10953"),
    ("biflow-b2", IS, "1", 303.0, "secondary", "arXiv 2512.10953"),
    ("itarflow-xl2", FID, "", 4.54, "secondary", "arXiv 2512.10953"),
    ("starflow", FID, "", 2.40, "verified", "arXiv 2506.06276 Table 1"),
    ("meanflow-xl2", FID, "1", 3.43, "verified", "arXiv 2505.13447 Table 2"),
    ("meanflow-xl2", IS, "1", 247.5, "verified", "arXiv 2601.22158 Table 6"),
    ("meanflow-xl2", FID, "2", 2.93, "verified", "arXiv 2505.13447 Table 2"),
    ("imm-xl2", FID, "2", 7.77, "verified", "arXiv 2505.13447 Table 2"),
    ("imf-xl2", FID, "1", 1.72, "verified", "github Lyy-iiis/imeanflow README"),
    ("pmf-h16", IS, "1", 268.8, "verified", "arXiv 2601.22158 Table 6"),
    ("dit-xl2", FID, "500", 2.27, "secondary", "arXiv 2212.09748"),
])
def test_anchor_figures(rows, model, metric, nfe, value, evidence, cite):
    r = find(rows, model, metric, nfe)
    assert r["value"] == value and r["evidence"] == evidence and cite in r["citation"]


def test_every_row_is_complete_and_consistent(rows):
    assert len(rows) >= 40
    for r in rows:
        where = (r["model"], r["metric"], r["nfe"])
        assert r["weights"] == "paper" and r["status"] == "ok" and r["source"] == "paper", where
        assert re.fullmatch(r"[a-z0-9.+-]+", r["model"]) and r["family"], where
        assert int(r["params"]) >= 10_000_000, where  # every paper states a parameter count
        assert r["nfe"] == "" or int(r["nfe"]) >= 1, where
        assert re.search(r"arXiv \d{4}\.\d{5}|github \S+/\S+", r["citation"]), where
        if r["evidence"] == "verified":  # verified means read at a named place
            assert "Table" in r["citation"] or "README" in r["citation"], where
        config = json.loads(r["config"])
        assert config["space"] in ("latent", "pixel") and config["paper_name"], where
        if r["metric"] in (FID, IS):
            # The evaluator behind the figure: ADM's, EDM2's calculate_metrics (DMF) or torch-fidelity (FACM),
            # with its reference named.
            assert r["n"] == "50000" and config["mode"] in ("adm", "edm2", "torch-fidelity") and config["reference"] \
                and r["device"] == "", where
            assert r["value"] > 0 and (r["metric"] != FID or r["value"] < 50), where
        else:
            assert r["metric"] == MS_PER_IMAGE and r["device"] in ("tpu", "gpu") and r["decode"] in ("on", "off", "")
        # The nfe column is blank exactly for autoregressive models.
        assert (r["nfe"] == "") == ("autoregressive" in r["notes"]), where
    # One set of facts per model: family, params and space agree across its rows.
    for model in {r["model"] for r in rows}:
        facts = {(r["family"], r["params"], json.loads(r["config"])["space"]) for r in rows if r["model"] == model}
        assert len(facts) == 1, (model, facts)
    # An IS never stands without the FID of the same setting.
    for r in rows:
        if r["metric"] == IS:
            find(rows, r["model"], FID, r["nfe"])
    # Everything read only in write-ups of the BiFlow paper is secondary until checked against the PDF.
    assert {r["evidence"] for r in rows if "2512.10953" in r["citation"]} == {"secondary"}


def test_biflow_speed_table_is_self_consistent(rows):
    """Decode-on rows are the printed generator time + the printed 1.3 ms decode, and the speed-ups
    the paper prints (kept in the notes) follow from the times to the printed precision."""
    tpu = {(r["model"], r["decode"]): r["value"] for r in rows if r["metric"] == MS_PER_IMAGE and r["device"] == "tpu"}
    assert set(tpu) == {(m, d) for m in ("biflow-b2", "itarflow-b2", "itarflow-xl2") for d in ("on", "off")}
    for model in ("biflow-b2", "itarflow-b2", "itarflow-xl2"):
        assert tpu[(model, "on")] == pytest.approx(tpu[(model, "off")] + 1.3)
    checked = 0
    for (model, decode), _ in tpu.items():
        note = find(rows, model, MS_PER_IMAGE, device="tpu", decode=decode)["notes"]
        printed = re.search(r"paper: (\d+)x slower", note)
        if printed:
            ratio = tpu[(model, decode)] / tpu[("biflow-b2", decode)]
            assert round(ratio) == int(printed.group(1)), (model, decode, ratio)
            checked += 1
    assert checked == 4  # 224x, 42x, 697x, 128x
    gpu = find(rows, "biflow-b2", MS_PER_IMAGE, device="gpu")
    assert gpu["value"] == 2.15 and gpu["decode"] == "" and "not confirmed" in gpu["notes"]


# --- cross-check against the reference notes (outside the repository; CI has them beside the clone) ---

def _number(cell: str) -> float | None:
    m = re.search(r"\d+(?:\.\d+)?", cell)
    return float(m.group()) if m and not cell.strip().startswith("-") else None


def _params(cell: str) -> int:
    m = re.match(r"\s*(\d+(?:\.\d+)?)([MB])", cell)
    return round(float(m.group(1)) * (1e6 if m.group(2) == "M" else 1e9))


def _nfe(cell: str) -> str:
    if m := re.match(r"\s*(\d+)x(\d+)", cell):
        return str(int(m.group(1)) * int(m.group(2)))
    if m := re.match(r"\s*(\d+)\b", cell):
        return m.group(1)
    return ""  # "autoregressive ...", "same"


def _tables(markdown: str):
    """(heading, header cells, body rows) of every pipe table."""
    heading, table = "", None
    for line in markdown.splitlines() + [""]:
        if line.startswith("#"):
            heading = line
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if table is None:
                table = (heading, cells, [])
            elif not set("".join(cells)) <= set("-: "):
                table[2].append(cells)
        elif table is not None:
            yield table
            table = None


@pytest.mark.skipif(not NOTES.is_file(), reason=f"reference notes not beside the clone ({NOTES})")
def test_every_figure_of_the_reference_notes_is_in_the_csv(rows):
    by_name = {}
    for r in rows:
        by_name.setdefault(json.loads(r["config"])["paper_name"], []).append(r)
    checked = 0
    for heading, header, body in _tables(NOTES.read_text()):
        col = {h.lower(): i for i, h in enumerate(header)}
        for cells in body:
            name = re.sub(r"\s*\(.*\)$", "", cells[0])
            assert name in by_name, f"{name!r} of the reference notes is missing from published.csv"
            mine = by_name[name]
            if "fid" in col:
                nfe = _nfe(cells[col["nfe"]])
                fid = [r for r in mine if r["metric"] == FID and r["nfe"] == nfe]
                assert len(fid) == 1 and fid[0]["value"] == float(cells[col["fid"]]), (name, nfe)
                is_ = [r for r in mine if r["metric"] == IS and r["nfe"] == nfe]
                expected_is = _number(cells[col["is"]])
                assert [r["value"] for r in is_] == ([expected_is] if expected_is is not None else []), name
                assert int(fid[0]["params"]) == _params(cells[col["params"]]), name
                if "status" in col:
                    expected = cells[col["status"]]
                else:  # "verified unless marked"; a table without a status is conservatively secondary
                    expected = "verified" if "verified unless marked" in heading else "secondary"
                assert {r["evidence"] for r in fid + is_} == {expected}, name
                if "space" in col:
                    space = {"L": "latent", "P": "pixel"}[cells[col["space"]]]
                    assert json.loads(fid[0]["config"])["space"] == space, name
                checked += 1 + len(is_)
            elif "generator ms/img" in col:
                gen = [r for r in mine if r["metric"] == MS_PER_IMAGE and r["device"] == "tpu"]
                off = next(r["value"] for r in gen if r["decode"] == "off")
                on = next(r["value"] for r in gen if r["decode"] == "on")
                assert off == float(cells[col["generator ms/img"]]), name
                approx = float(re.search(r"~(\d+(?:\.\d+)?)", cells[col["+ vae decode"]]).group(1))
                assert math.isclose(on, approx, abs_tol=0.5), name  # printed rounded, "~66"
                checked += 2
    # Every row of the papers the notes cover but the GPU prose figure; families added after the notes
    # (DMF, SoFlow, FACM, the official MeanFlow B/4) are read from their repositories at the line their citation names.
    covered = {r["config"] and json.loads(r["config"])["paper_name"] for r in rows} & {
        re.sub(r"\s*\(.*\)$", "", cells[0]) for _, _, body in _tables(NOTES.read_text()) for cells in body}
    assert checked == len([r for r in rows if r["device"] != "gpu" and json.loads(r["config"])["paper_name"] in covered])
    assert {r["family"] for r in rows if json.loads(r["config"])["paper_name"] not in covered} <= {
        "dmf", "soflow", "facm", "meanflow"}
