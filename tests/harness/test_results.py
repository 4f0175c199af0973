import csv
import os

import pytest

from adapters.api.errors import InputError
from harness.results import COLUMNS, MS_PER_IMAGE, OK, RunFile, atomic_write, read_run


def test_run_file_rows_carry_provenance_and_reload(tmp_path):
    path = tmp_path / "runs" / "r.csv"
    run = RunFile(path)
    run.add(model="m", metric=MS_PER_IMAGE, value=1.5, spread=0.1, n=5, config={"b": 1, "a": 2})
    run.add(model="m", metric=MS_PER_IMAGE, value=2.5, n=5)
    df = read_run(path)
    assert list(df.columns) == list(COLUMNS)
    assert df["value"].tolist() == [1.5, 2.5]
    assert set(df["status"]) == {OK} and set(df["source"]) == {"measured"}
    assert df["run_id"].nunique() == 1 and df["git_sha"].iloc[0] != ""
    assert "torch=" in df["versions"].iloc[0]
    assert df["config"].iloc[0] == '{"a": 2, "b": 1}'  # sorted keys: byte-stable files


def test_unknown_column_is_refused(tmp_path):
    with pytest.raises(ValueError, match="not result columns"):
        RunFile(tmp_path / "r.csv").add(modle="typo")


def test_atomic_write_leaves_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "f.csv"
    atomic_write(path, "old\n")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        atomic_write(path, "new\n")
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["f.csv"]  # no temporary file left


def test_read_run_rejects_foreign_and_empty_files(tmp_path):
    missing = tmp_path / "missing.csv"
    with pytest.raises(InputError, match="does not exist"):
        read_run(missing)
    foreign = tmp_path / "foreign.csv"
    foreign.write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="lacks the result columns"):
        read_run(foreign)
    empty = tmp_path / "empty.csv"
    with open(empty, "w", newline="") as f:
        csv.writer(f).writerow(COLUMNS)
    with pytest.raises(InputError, match="no rows"):
        read_run(empty)


def test_append_keeps_earlier_rows_and_their_provenance(tmp_path):
    path = tmp_path / "r.csv"
    first = RunFile(path)
    first.add(model="a", metric=MS_PER_IMAGE, value=1.0)
    second = RunFile(path, append=True)
    second.add(model="b", metric=MS_PER_IMAGE, value=2.0)
    df = read_run(path)
    assert df["model"].tolist() == ["a", "b"]
    assert df["run_id"].tolist() == [first.provenance["run_id"], second.provenance["run_id"]]
    RunFile(path).add(model="c", metric=MS_PER_IMAGE, value=3.0)  # without append: a fresh file
    assert read_run(path)["model"].tolist() == ["c"]


def test_append_refuses_a_file_that_is_not_a_run(tmp_path):
    path = tmp_path / "notes.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="lacks the result columns"):
        RunFile(path, append=True)
    assert path.read_text() == "a,b\n1,2\n"


# The header and first rows of a bench run written by schema 1 (2026-11-25, before intervals).
SCHEMA_1_RUN = """\
schema_version,run_id,created,git_sha,nfebench_version,versions,model,family,params,nfe,backend,device,device_name,dtype,compiled,batch_size,decode,guidance,seed,weights,metric,value,spread,n,status,source,citation,notes,config
1,20261125T183608Z-03ed17,2026-11-25T18:36:08+00:00,b16f86108c2af4227867798e1b7e1fca2de3c376,0.1.0,python=3.11.7;torch=2.14.1,calibration,,,,torch,cpu,AMD EPYC,float32,False,,,,0,,calibration_ms,56.64142500063463,0.3133770005661063,5,ok,measured,,,"{""threads"": 2, ""workload"": ""float32 matmul 512x512 x40""}"
1,20261125T183608Z-03ed17,2026-11-25T18:36:08+00:00,b16f86108c2af4227867798e1b7e1fca2de3c376,0.1.0,python=3.11.7;torch=2.14.1,biflow-b2,biflow,136194448,1,torch,cpu,AMD EPYC,float32,False,1,off,,0,random-init,ms_per_batch,328.5568039991631,1.9064970010731486,5,ok,measured,,,"{""max_time"": 6.0, ""repeats"": 5, ""threads"": 2, ""timer"": ""WallClock"", ""warmup"": 1}"
"""


def test_schema_1_files_read_with_the_new_columns_empty(tmp_path):
    path = tmp_path / "schema1.csv"
    path.write_text(SCHEMA_1_RUN)
    df = read_run(path)
    assert len(df) == 2 and df.value.tolist()[1] == pytest.approx(328.5568039991631)
    assert set(COLUMNS) <= set(df.columns)
    assert set(df.schema_version) == {1}
    assert df.ci_low.isna().all() and df.ci_high.isna().all() and set(df.stable) == {""}


def test_intervals_and_stability_round_trip(tmp_path):
    from harness.results import SCHEMA_VERSION, SPEEDUP

    path = tmp_path / "r.csv"
    run = RunFile(path)
    run.add(model="biflow-b2", metric=SPEEDUP, value=30.1, ci_low=29.2, ci_high=31.0, stable=True, n=5,
            config={"teacher": "itarflow-b2"})
    run.add(model="biflow-b2", metric=MS_PER_IMAGE, value=330.0, n=1, stable=False, notes="one call")
    df = read_run(path)
    assert set(df.schema_version) == {SCHEMA_VERSION} and SCHEMA_VERSION == 2
    assert df.ci_low.tolist()[0] == 29.2 and df.ci_high.tolist()[0] == 31.0 and df.ci_low.isna().tolist()[1]
    assert [str(v) for v in df.stable] == ["True", "False"]
