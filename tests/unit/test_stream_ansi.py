"""The build log without terminal colour codes: CSI/OSC and other control sequences stripped, text kept."""

from __future__ import annotations

import string

from hypothesis import given
from hypothesis import strategies as st

from torchrig.engine.stream import BuildStream, strip_ansi

PLAIN = st.text(alphabet=string.ascii_letters + string.digits + string.punctuation.replace("\x1b", "") + " \t",
                max_size=60)
PARAMS = st.text(alphabet="0123456789;?", max_size=8)
SEQUENCES = st.one_of(
    st.builds(lambda p, f: f"\x1b[{p}{f}", PARAMS, st.sampled_from("mKHJABCDGfhlsu")),  # CSI: colours, cursor
    st.builds(lambda t, end: f"\x1b]{t}{end}", st.text(alphabet=string.printable.replace("\x1b", "")
                                                        .replace("\x07", "").strip(), max_size=20),
              st.sampled_from(["\x07", "\x1b\\"])),  # OSC: window title, hyperlinks
    st.sampled_from(["\x1b(B", "\x1b)0", "\x1b7", "\x1b8", "\x1b=", "\x1b>", "\x9b0m"]),
)


@given(parts=st.lists(PLAIN, min_size=1, max_size=6), seqs=st.lists(SEQUENCES, max_size=6))
def test_sequences_anywhere_between_text_are_removed_and_the_text_kept(parts: list[str], seqs: list[str]) -> None:
    mixed = "".join(p + (seqs[i] if i < len(seqs) else "") for i, p in enumerate(parts))
    assert strip_ansi(mixed) == "".join(parts)


@given(st.text(max_size=200))
def test_no_escape_or_control_character_survives(text: str) -> None:
    out = strip_ansi(text)
    assert all(c in "\t\n" or " " <= c < "\x7f" or c >= "\xa0" for c in out)
    assert strip_ansi(out) == out


@given(st.lists(st.text(alphabet=st.characters(blacklist_characters="\n\x1b\x9b"), max_size=40), max_size=5))
def test_lines_are_cleaned_one_by_one(lines: list[str]) -> None:
    # Found by the dev profile: a carriage return in one line must not swallow the lines before it ("a\r\nb").
    assert strip_ansi("\n".join(lines)) == "\n".join(strip_ansi(line) for line in lines)
    assert strip_ansi("kept\r\nnext") == "kept\nnext"
    assert strip_ansi("\x1b]0;unterminated title\nnext line") == "\nnext line"


def test_pip_colours_and_progress_do_not_reach_the_build_log() -> None:
    lines: list[str] = []
    stream = BuildStream(label="cpu", log=lines.append)
    stream.feed({"stream": "Step 1/2 : RUN pip install torch\n"})
    stream.feed({"stream": "\x1b[91mERROR: \x1b[0"})  # a sequence split across two stream items
    stream.feed({"stream": "mNo matching distribution\n   \x1b[38;5;70m━━━━\x1b[0m 1.2/5.0 MB\r"})
    stream.feed({"stream": "   \x1b[38;5;70m━━━━━━━━\x1b[0m 5.0/5.0 MB\n"})
    assert "    ERROR: No matching distribution" in lines
    assert "       ━━━━━━━━ 5.0/5.0 MB" in lines
    assert not any("\x1b" in line for line in lines + stream.tail)
