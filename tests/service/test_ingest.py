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


def test_rows_that_are_not_utf8_are_rejected_and_the_others_ingested(make_engine, tmp_path):
    engine = make_engine()
    src = tmp_path / "cat.jsonl"
    lines = [json.dumps(r).encode() for r in rows(4)]
    lines.insert(1, b'{"id": "latin1", "title": "Caf\xe9 mug"}')  # a Latin-1 byte, not UTF-8
    lines.insert(3, b'{"id": "lone", "title": "half a pair \\udc80"}')  # valid bytes, invalid Unicode
    src.write_bytes(b"\n".join(lines) + b"\n")
    for _ in range(2):  # a rerun reads the same file the same way
        summary = ingest_file(engine.catalogue, src, batch_size=2, progress=False)
        assert (summary.upserted, summary.rejected) == (4, 2)
        rejects = read_rejects(summary.rejects_file)
        assert [r["line"] for r in rejects] == [2, 4]
        assert "not valid UTF-8: byte 0xe9" in rejects[0]["error"] and "lone surrogate" in rejects[1]["error"]
        assert engine.catalogue.count() == 4


def test_csv_rows_that_are_not_utf8_are_rejected_and_a_bad_header_is_fatal(make_engine, tmp_path):
    engine = make_engine()
    src = tmp_path / "cat.csv"
    src.write_bytes("\ufeffid,title,brand\n".encode()  # a byte-order mark, as spreadsheet exports write
                    + b"c1,Stapler,Max\nc2,Caf\xe9 mug,Acme\nc3,\"Two-line\nnotebook\",\n")
    summary = ingest_file(engine.catalogue, src, progress=False)
    assert (summary.upserted, summary.rejected) == (2, 1)
    assert [(r["line"], r["error"][:25]) for r in read_rejects(summary.rejects_file)] == [(3, "row is not valid UTF-8: b")]
    assert engine.catalogue.get("c3") is not None and engine.catalogue.get("c2") is None
    header = tmp_path / "header.csv"
    header.write_bytes(b"id,t\xefitle\nc1,x\n")
    with pytest.raises(FatalIngestError, match="header.*not valid UTF-8"):
        ingest_file(engine.catalogue, header, progress=False)


def test_a_repeated_id_is_rejected_and_the_first_row_kept(make_engine, tmp_path):
    engine = make_engine()
    src = tmp_path / "cat.jsonl"
    write_jsonl(src, [*rows(3), {"id": "i1", "title": "A different pen"}, {"id": "i0", "title": "Another"}])
    summary = ingest_file(engine.catalogue, src, batch_size=10, progress=False)  # duplicates within one batch
    assert (summary.upserted, summary.rejected, summary.duplicates) == (3, 2, 2)
    assert [(r["line"], r["id"], r["field"]) for r in read_rejects(summary.rejects_file)] == [(4, "i1", "id"),
                                                                                               (5, "i0", "id")]
    assert "line 2 has the same id" in read_rejects(summary.rejects_file)[0]["error"]
    assert engine.catalogue.get("i1").payload["title"] == "Item number 1 gel pen"
    assert "2 for repeating an earlier row's id" in summary.line()
    csv_src = tmp_path / "cat.csv"
    csv_src.write_text("id,title\nc1,Stapler\nc2,Notebook\nc1,Stapler again\n", encoding="utf-8")
    summary = ingest_file(engine.catalogue, csv_src, batch_size=1, progress=False)  # across batches
    assert (summary.upserted, summary.duplicates) == (2, 1)
    assert read_rejects(summary.rejects_file)[0]["line"] == 4
    assert engine.catalogue.get("c1").payload["title"] == "Stapler"


def test_a_resumed_run_counts_its_own_rows_and_remembers_the_ids_before_it(make_engine, tmp_path, monkeypatch):
    engine = make_engine()
    src = tmp_path / "big.jsonl"
    write_jsonl(src, [*rows(6), {"id": "i2", "title": "Repeated after the resume point"}, *rows(3, prefix="j")])
    real_write = engine.catalogue.write
    calls = {"n": 0}

    def dying_write(points):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        real_write(points)

    monkeypatch.setattr(engine.catalogue, "write", dying_write)
    with pytest.raises(KeyboardInterrupt):
        ingest_file(engine.catalogue, src, batch_size=3, checkpoint_dir=tmp_path / "ck", progress=False)
    monkeypatch.setattr(engine.catalogue, "write", real_write)
    summary = ingest_file(engine.catalogue, src, batch_size=3, checkpoint_dir=tmp_path / "ck", progress=False)
    assert (summary.resumed_from_line, summary.upserted, summary.upserted_before) == (6, 9, 6)
    assert summary.upserted_this_run == 3
    assert summary.items_per_second == pytest.approx(3 / summary.seconds)
    assert "(3 in this run:" in summary.line()
    assert [(r["line"], r["id"]) for r in read_rejects(summary.rejects_file)] == [(7, "i2")]
    assert engine.catalogue.get("i2").payload["title"] == "Item number 2 gel pen"


def test_a_run_killed_before_its_checkpoint_writes_no_reject_twice(make_engine, tmp_path, monkeypatch):
    from service import ingest

    engine = make_engine()
    src = tmp_path / "cat.jsonl"
    write_jsonl(src, [rows(1)[0], "{broken", *rows(2, prefix="j"), {"id": "no-title"}, *rows(2, prefix="k")])
    real_save = ingest.Checkpoint.save
    calls = {"n": 0}

    def dying_save(self, state):
        calls["n"] += 1
        if calls["n"] == 2:  # the second batch's rows and rejects are written, its checkpoint is not
            raise KeyboardInterrupt
        real_save(self, state)

    monkeypatch.setattr(ingest.Checkpoint, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        ingest_file(engine.catalogue, src, batch_size=3, checkpoint_dir=tmp_path / "ck", progress=False)
    assert [r["line"] for r in read_rejects(src.with_name("cat.jsonl.rejects.jsonl"))] == [2, 5]
    monkeypatch.setattr(ingest.Checkpoint, "save", real_save)
    summary = ingest_file(engine.catalogue, src, batch_size=3, checkpoint_dir=tmp_path / "ck", progress=False)
    assert [r["line"] for r in read_rejects(summary.rejects_file)] == [2, 5]
    assert (summary.upserted, summary.rejected) == (5, 2) and engine.catalogue.count() == 5


def test_cli_ingest_of_a_file_with_a_bad_byte_exits_zero(tmp_path, capsys):
    src = tmp_path / "cat.jsonl"
    src.write_bytes(b'{"id": "a", "title": "Pen"}\n{"id": "b", "title": "\xff"}\n{"id": "c", "title": "Ink"}\n')
    assert main(["ingest", str(src), "--data-dir", str(tmp_path / "data"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "ingested 2 items" in out and "rejected 1" in out
