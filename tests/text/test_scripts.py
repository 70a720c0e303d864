"""Text that is not English prose (issue 17, kind 5): sentence ends of the common scripts split segments, and a
document on one long line still becomes examples."""

import pytest

from selfsup.text import Document, pair_examples, split_segments

# --------------------------------------------------------------------------

@pytest.mark.parametrize("script, text, segments", [
    ("Chinese", "今天天气很好。我们去公园吧！你来吗？", ["今天天气很好。", "我们去公园吧！", "你来吗？"]),
    ("Japanese", "雨が降っています。傘を持っていますか？", ["雨が降っています。", "傘を持っていますか？"]),
    ("Hindi", "यह एक वाक्य है। यह दूसरा है॥", ["यह एक वाक्य है।", "यह दूसरा है॥"]),
    ("Arabic/Urdu", "هل أنت بخير؟ نعم۔", ["هل أنت بخير؟", "نعم۔"]),
    ("Amharic", "ሰላም ነው። እንዴት ነህ።", ["ሰላም ነው።", "እንዴት ነህ።"]),
    ("English", 'He said "Hi." Then he left!', ['He said "Hi."', "Then he left!"]),
])
def test_sentence_ends_of_common_scripts_split_segments(script, text, segments):
    assert split_segments(text) == segments, script


def test_chinese_prose_and_a_one_line_document_become_bert_examples(tokenizers):
    tok = tokenizers["wordpiece"]
    chinese = Document("zh", tuple(split_segments("今天天气很好。我们去公园吧！你来吗？")))
    assert pair_examples([chinese], tok, "sop", max_len=32)  # three sentences: pairs, not "no two segments"
    long_line = Document("long", (" ".join(["light"] * 2000),))  # one 2,000-token line
    examples = pair_examples([long_line], tok, "sop", max_len=64)
    assert len(examples) >= 2000 // 61 - 1 and all(len(e["input_ids"]) <= 64 for e in examples)
