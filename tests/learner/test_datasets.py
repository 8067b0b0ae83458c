"""Dataset validation of hostile and broken files: every rejection names the line and
what was expected, and nothing is quadratic or recursive in the input."""

from __future__ import annotations

import json

from rft_learner.datasets import MAX_NESTING, OverlongLine, iter_lines, validate_lines

GOOD = json.dumps({"messages": [{"role": "user", "content": "hi"}], "answer": "1"}).encode()


def reasons(data: bytes, max_line_bytes: int = 1 << 20) -> list[str]:
    chunks = [data[i : i + 7] for i in range(0, len(data), 7)]  # lines straddle chunks
    return [str(e) for e in validate_lines(iter_lines(chunks, max_line_bytes), max_line_bytes).errors]


def test_lines_split_across_chunks_are_whole() -> None:
    assert list(iter_lines([b"ab", b"c\nde", b"\n", b"\nf"])) == [b"abc", b"de", b"", b"f"]
    assert reasons(GOOD + b"\n" + GOOD) == []


def test_an_overlong_line_is_measured_not_held() -> None:
    lines = list(iter_lines([b"x" * 10, b"y" * 10, b"\nok"], max_line_bytes=15))
    assert lines == [OverlongLine(20), b"ok"]
    long = len(GOOD) + 10
    assert reasons(GOOD + b"\n" + b"z" * long, max_line_bytes=len(GOOD)) == [
        f"line 2: line is {long} bytes; the limit is {len(GOOD)}"
    ]


def test_deep_nesting_is_a_line_error_not_a_crash() -> None:
    deep = b'{"messages": [{"role": "user", "content": "x"}], "a": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    assert reasons(GOOD + b"\n" + deep) == [f"line 2: JSON nested too deeply; the limit is {MAX_NESTING} levels"]
    nested = b'{"messages": [{"role": "user", "content": "x"}], "a": ' + b"[" * 70 + b"]" * 70 + b"}"
    assert reasons(nested) == [f"line 1: JSON nested 71 levels deep; the limit is {MAX_NESTING}"]


def test_nul_bytes_and_control_characters_are_named() -> None:
    assert reasons(b'{"messages": "a\x00b"}') == ["line 1: a NUL byte at column 16; JSON text has none"]
    assert reasons(b'{"messages": "a\x01b"}') == ["line 1: invalid JSON: Invalid control character at column 16"]


def test_an_empty_file_is_one_clear_error() -> None:
    assert reasons(b"") == ["the file has no examples: it is empty or holds only blank lines"]
    assert reasons(b"\n \n") == ["the file has no examples: it is empty or holds only blank lines"]
