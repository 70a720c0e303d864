import json

import pytest

from selfsup.errors import SelfsupError
from selfsup.text import load_documents, read_documents, split_segments


def test_split_segments_lines_then_sentences():
    text = 'First line.\nHe said "Go." Then he left! Did he?  Yes\n\n  \nno end'
    assert split_segments(text) == ["First line.", 'He said "Go."', "Then he left!", "Did he?", "Yes", "no end"]


def test_txt_documents_are_blank_line_blocks(tmp_path):
    (tmp_path / "a.txt").write_text("One. Two.\nThree\n\n\nFour\n  \nFive\n", encoding="utf-8")
    documents = read_documents(tmp_path / "a.txt")
    assert [d.segments for d in documents] == [("One.", "Two.", "Three"), ("Four",), ("Five",)]
    assert documents[0].name == str(tmp_path / "a.txt") and documents[0].book == ""


def test_folder_reads_every_txt_in_sorted_order(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.TXT").write_text("b1\nb2", encoding="utf-8")
    (tmp_path / "a.txt").write_text("a1\n\na2", encoding="utf-8")
    (tmp_path / "notes.md").write_text("ignored", encoding="utf-8")
    (tmp_path / "empty.txt").write_text("\n\n", encoding="utf-8")
    assert [d.segments for d in read_documents(tmp_path)] == [("a1",), ("a2",), ("b1", "b2")]


def test_jsonl_one_document_per_line(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"text": "A. B.\nC", "id": 1}) + "\n\n" + json.dumps({"text": "D"}) + "\n")
    documents = read_documents(path)
    assert [d.segments for d in documents] == [("A.", "B.", "C"), ("D",)]
    assert documents[1].name == f"{path}:3"


@pytest.mark.parametrize("line, says", [("{not json", "line 2: not valid JSON"), ('{"txt": "x"}', "line 2: expected"),
                                        ('["x"]', "line 2: expected"), ('{"text": 3}', "line 2: expected")])
def test_bad_jsonl_line_names_its_number(tmp_path, line, says):
    path = tmp_path / "c.jsonl"
    path.write_text('{"text": "fine"}\n' + line + "\n")
    with pytest.raises(SelfsupError, match=says):
        read_documents(path)


def test_clear_errors(tmp_path):
    with pytest.raises(SelfsupError, match="no text at .*missing"):
        read_documents(tmp_path / "missing")
    with pytest.raises(SelfsupError, match="no .txt files under"):
        read_documents(tmp_path)
    (tmp_path / "blank.txt").write_text("\n \n")
    with pytest.raises(SelfsupError, match="holds no text"):
        read_documents(tmp_path / "blank.txt")
    (tmp_path / "x.csv").write_text("a,b")
    with pytest.raises(SelfsupError, match="neither a .txt nor a .jsonl"):
        read_documents(tmp_path / "x.csv")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(SelfsupError, match="not UTF-8"):
        read_documents(tmp_path / "latin1.txt")


def test_load_documents_names_the_builtin_bible(tmp_path):
    assert len(load_documents("bible")) == 1189
    (tmp_path / "a.txt").write_text("x\ny")
    assert load_documents(str(tmp_path / "a.txt"))[0].segments == ("x", "y")
