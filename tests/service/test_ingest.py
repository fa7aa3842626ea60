"""The batch ingestion job: streaming, rejects with line numbers, idempotent reruns, resume."""

import csv
import json

import pytest

from service.cli import main
from service.ingest import FatalIngestError, ingest_file


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write((row if isinstance(row, str) else json.dumps(row)) + "\n")


def rows(n, prefix="i"):
    return [{"id": f"{prefix}{k}", "title": f"Item number {k} gel pen", "categories": ["Pens"], "price": k} for k in range(n)]


def read_rejects(path):
    return [json.loads(line) for line in open(path, encoding="utf-8")]


def test_jsonl_ingest_reports_rejects_with_line_numbers_and_reruns_idempotently(make_engine, tmp_path):
    engine = make_engine()
    src = tmp_path / "cat.jsonl"
    data = rows(10)
    write_jsonl(src, [data[0], data[1], "{broken json", data[2], {"id": "nt"}, "", data[3], *data[4:]])
    summary = ingest_file(engine.catalogue, src, batch_size=3, progress=False)
    assert (summary.upserted, summary.rejected) == (10, 2)
    rejects = read_rejects(summary.rejects_file)
    assert [(r["line"], r["field"]) for r in rejects] == [(3, None), (5, "title")]
    assert "JSON" in rejects[0]["error"] and rejects[1]["id"] == "nt"
    assert engine.catalogue.count() == 10
    again = ingest_file(engine.catalogue, src, batch_size=4, progress=False)
    assert again.upserted == 10 and engine.catalogue.count() == 10


def test_csv_ingest_with_attributes_and_categories(make_engine, tmp_path):
    engine = make_engine()
    src = tmp_path / "cat.csv"
    with open(src, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "title", "brand", "categories", "price", "attributes.colour"])
        w.writerow(["c1", "Blue gel pen, pack of 12", "Pilot", "Office|Pens", "4.5", "blue"])
        w.writerow(["c2", "Stapler", "Max", "Office|Staplers", "not-a-price", ""])
        w.writerow(["c3", "Notebook with a\nmultiline title", "", "Notebooks", "", ""])
    summary = ingest_file(engine.catalogue, src, progress=False)
    assert (summary.upserted, summary.rejected) == (2, 1)
    assert read_rejects(summary.rejects_file)[0]["field"] == "price"
    c1 = engine.catalogue.get("c1").payload
    assert c1["categories"] == ["Office", "Pens"] and c1["attributes"] == {"colour": "blue"} and c1["price"] == 4.5
    assert engine.catalogue.get("c3").payload["brand"] is None


def test_unknown_csv_columns_and_missing_files_are_fatal(make_engine, tmp_path):
    engine = make_engine()
    src = tmp_path / "bad.csv"
    src.write_text("id,title,colour\n1,x,red\n")
    with pytest.raises(FatalIngestError, match="colour"):
        ingest_file(engine.catalogue, src, progress=False)
    with pytest.raises(FatalIngestError, match="does not exist"):
        ingest_file(engine.catalogue, tmp_path / "missing.jsonl", progress=False)
    (tmp_path / "cat.txt").write_text("")
    with pytest.raises(FatalIngestError, match="--format"):
        ingest_file(engine.catalogue, tmp_path / "cat.txt", progress=False)
    assert engine.catalogue.count() == 0


def test_a_killed_run_resumes_where_it_stopped(make_engine, tmp_path, monkeypatch):
    engine = make_engine()
    src = tmp_path / "big.jsonl"
    write_jsonl(src, [*rows(7), {"id": "bad"}, *rows(5, prefix="j")])
    calls = {"n": 0}
    real_write = engine.catalogue.write

    def dying_write(points):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # the third batch never lands
        real_write(points)

    monkeypatch.setattr(engine.catalogue, "write", dying_write)
    with pytest.raises(KeyboardInterrupt):
        ingest_file(engine.catalogue, src, batch_size=3, checkpoint_dir=tmp_path / "ck", progress=False)
    assert engine.catalogue.count() == 6
    monkeypatch.setattr(engine.catalogue, "write", real_write)
    encoded = []
    real_encode = engine.catalogue.encode
    monkeypatch.setattr(engine.catalogue, "encode", lambda items, **kw: encoded.extend(items) or real_encode(items, **kw))
    summary = ingest_file(engine.catalogue, src, batch_size=3, checkpoint_dir=tmp_path / "ck", progress=False)
    assert summary.resumed_from_line == 6
    assert len(encoded) == 6  # only the rows after the last committed batch were redone
    assert engine.catalogue.count() == 12 and summary.upserted == 12
    assert [r["line"] for r in read_rejects(summary.rejects_file)] == [8]
    assert not list((tmp_path / "ck").glob("*.json"))  # finished: checkpoint gone


def test_cli_exit_codes(tmp_path, capsys):
    src = tmp_path / "cat.jsonl"
    write_jsonl(src, [*rows(3), {"id": 1}])
    data_dir = tmp_path / "data"
    assert main(["ingest", str(src), "--data-dir", str(data_dir), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "ingested 3 items" in out and "rejected 1" in out
    bad = tmp_path / "bad.csv"
    bad.write_text("sku,name\n1,x\n")
    assert main(["ingest", str(bad), "--data-dir", str(data_dir), "--quiet"]) == 2
    assert "needs id and title" in capsys.readouterr().err
