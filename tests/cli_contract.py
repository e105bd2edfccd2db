"""The command-line contract shared by `foundry predict --json` and the runtimes' CLIs
(docs/preprocessor-spec.md, "The command-line contract"): what the node and Rust CLI tests
feed them and how their JSON lines are compared."""

from __future__ import annotations

import json

from foundry.conformance_cases import HARD_CASES

# Every hard case (their "\n" split them into more lines, identically for every CLI), CRLF
# line ends, an empty line, and no final newline.
CLI_INPUT = (
    "\n".join(HARD_CASES) + "\r\n今天天气怎么样？\r\n\n打开客厅的灯\n最后一行没有换行"
).encode()


def parse_lines(out: bytes) -> list[dict]:
    """JSON lines split at "\\n" only (the JSON keeps U+0085, U+2028... raw, and
    ``str.splitlines()`` splits there)."""
    lines = out.decode("utf-8").split("\n")
    assert lines.pop() == "", "output does not end with a newline"
    return [json.loads(line) for line in lines]


def assert_same_answers(
    got_out: bytes, want_out: bytes, threshold: float, tolerance: float = 1e-5, *, ties: float = 1e-5
) -> None:
    """Same lines, keys, texts, labels and confident flags; probabilities within ``tolerance``.

    A label is only compared when the top two probabilities are more than ``ties`` apart, and
    ``confident`` only when the top probability is more than ``ties`` from the threshold.
    """
    got_lines, want_lines = parse_lines(got_out), parse_lines(want_out)
    assert len(got_lines) == len(want_lines)
    for got, want in zip(got_lines, want_lines, strict=True):
        assert list(got) == list(want) == ["text", "label", "probabilities", "confident"]
        assert got["text"] == want["text"]
        assert list(got["probabilities"]) == list(want["probabilities"])
        for label, p in want["probabilities"].items():
            assert abs(got["probabilities"][label] - p) <= tolerance, (got, want)
        top2 = sorted(want["probabilities"].values())[-2:]
        if top2[1] - top2[0] > ties:
            assert got["label"] == want["label"], (got, want)
        if abs(top2[1] - threshold) > ties:
            assert got["confident"] == want["confident"], (got, want)
