"""SpeechChunker and clean_for_speech: pure text, no models."""

from __future__ import annotations

import random

import pytest

from voice.config import ChunkerConfig
from voice.tts.chunker import SpeechChunker, cap_length, clean_for_speech, split_sentences, utterances

#: The shape these tests were written for (min_first_chars 20, first_words 8): they test the
#: mechanism, not the defaults (test_the_default_first_piece covers those).
SHAPE = ChunkerConfig(min_first_chars=20, first_words=8)


def run(text: str, step: int | None = None, cfg: ChunkerConfig | None = None) -> tuple[list[str], list[str]]:
    """Feed ``text`` in slices of ``step`` characters; (pieces during feed, pieces at flush)."""
    c = SpeechChunker(cfg or SHAPE)
    fed: list[str] = []
    step = step or len(text) or 1
    for i in range(0, len(text), step):
        fed += c.feed(text[i : i + step])
    return fed, c.flush()


def spoken(text: str, step: int | None = None, cfg: ChunkerConfig | None = None) -> list[str]:
    fed, flushed = run(text, step, cfg)
    return fed + flushed


# ----------------------------------------------------------------------------- cleaning


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        ("This is **bold** and __strong__.", "This is bold and strong."),
        ("This is *italic* and _also_ italic.", "This is italic and also italic."),
        ("***Both*** at once.", "Both at once."),
        ("~~Gone~~ here.", "Gone here."),
        ("Read [the docs](https://example.com/docs) today.", "Read the docs today."),
        ("An image ![a cat](cat.png) here.", "An image a cat here."),
        ("Visit https://example.com/a?b=c for more.", "Visit for more."),
        ("Visit www.example.org now.", "Visit now."),
        ("See <https://example.com> please.", "See please."),
        ("Run `ls` to list files.", "Run ls to list files."),
        ("Call `foo(bar=[1, 2]) {}` here.", "Call here."),
        ("Great job 🎉🚀 really 👍🏽!", "Great job really!"),
        ("Flag 🇺🇸 and family 👨‍👩‍👧 and heart ❤️.", "Flag and family and heart."),
        ("snake_case_name stays.", "snake_case_name stays."),
        ("2 * 3 = 6.", "2 3 = 6."),
        ("A <b>tag</b> here.", "A tag here."),
        ("Numbers 3.14 and 1,000 stay.", "Numbers 3.14 and 1,000 stay."),
    ],
)
def test_clean_inline_constructs(raw: str, want: str) -> None:
    assert clean_for_speech(raw) == want


def test_clean_headers_lists_and_fences() -> None:
    md = (
        "# Title\n"
        "## Steps to follow\n"
        "1. Preheat the oven\n"
        "2) Mix the flour.\n"
        "- Eggs\n"
        "* Milk\n"
        "+ Butter\n"
        "> A quote here\n"
        "---\n"
        "```python\n"
        "print('never read')\n"
        "```\n"
        "~~~\n"
        "also hidden\n"
        "~~~\n"
        "Done!"
    )
    assert clean_for_speech(md) == (
        "Title. Steps to follow. Preheat the oven. Mix the flour. Eggs. Milk. Butter. A quote here. Done!"
    )


def test_clean_table() -> None:
    md = "| Name | Age |\n|------|:---:|\n| Ann | 31 |\n"
    assert clean_for_speech(md) == "Name, Age. Ann, 31."


def test_clean_nothing_speakable() -> None:
    assert clean_for_speech("```\ncode only\n```") == ""
    assert clean_for_speech("🎉🎉 https://x.y/z") == ""
    assert spoken("```\ncode only\n```\n🎉") == []


def test_split_sentences() -> None:
    assert split_sentences("Hello there. Dr. Who is here! Is it 3.5? yes") == [
        "Hello there.", "Dr. Who is here!", "Is it 3.5?", "yes",
    ]
    assert split_sentences("  ") == []
    assert split_sentences("No. It is J. R. R. Tolkien, e.g. the author.") == [
        "No.", "It is J. R. R. Tolkien, e.g. the author.",
    ]


# ----------------------------------------------------------------------------- chunking


def test_first_piece_at_clause_boundary_before_sentence_ends() -> None:
    c = SpeechChunker(ChunkerConfig(min_first_chars=20, first_words=8, min_chars=40, max_chars=300))
    assert c.feed("Well, the answer to your question") == []  # "Well," is too short
    assert c.feed(", as far as I know, is") == ["Well, the answer to your question,"]
    out = c.feed(" forty two. That is what the book says about it. Short one.")
    # later pieces are sentences of at least 40 characters: the first two are joined
    assert out == ["as far as I know, is forty two. That is what the book says about it."]
    assert c.flush() == ["Short one."]


def test_later_pieces_are_sentences_joined_to_min_chars() -> None:
    text = "Hello to you, my friend. Yes. No. Maybe so. This sentence is long enough by itself. End."
    fed, flushed = run(text, step=1)
    assert fed == [
        "Hello to you, my friend.",  # "Hello to you," is under min_first_chars
        "Yes. No. Maybe so. This sentence is long enough by itself.",
    ]
    assert flushed == ["End."]


def test_later_pieces_never_split_at_clauses() -> None:
    pieces = spoken("Okay, here we go now. First, second, third, fourth, fifth, sixth, and seventh items.")
    assert pieces == ["Okay, here we go now.", "First, second, third, fourth, fifth, sixth, and seventh items."]


def test_boundary_waits_for_whitespace() -> None:
    c = SpeechChunker(ChunkerConfig(min_first_chars=5))
    assert c.feed("The value is 3.") == []
    assert c.feed("14 exactly") == []
    assert c.feed(". Next") == ["The value is 3.14 exactly."]
    assert c.flush() == ["Next"]


def test_abbreviations_do_not_split() -> None:
    pieces = spoken("I met Dr. Smith and Mrs. Jones at the station, e.g. near the gate. Then we left for home.")
    assert pieces == ["I met Dr. Smith and Mrs. Jones at the station,", "e.g. near the gate. Then we left for home."]


def test_max_chars_cuts_between_words() -> None:
    cfg = ChunkerConfig(min_first_chars=10, min_chars=20, max_chars=50)
    words = " ".join(f"word{i}" for i in range(40))
    pieces = spoken(words, step=3, cfg=cfg)
    assert all(len(p) <= 50 for p in pieces)
    assert " ".join(pieces).split() == words.split()


def test_max_chars_prefers_clause_boundary() -> None:
    cfg = ChunkerConfig(min_first_chars=10, min_chars=20, max_chars=60)
    text = "alpha beta gamma delta, epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho"
    fed, flushed = run("Start here. " + text, cfg=cfg)
    assert fed[:2] == ["Start here.", "alpha beta gamma delta,"]
    assert all(len(p) <= 60 for p in fed + flushed)
    assert " ".join(fed + flushed) == "Start here. " + text


def test_flush_resets_for_next_turn() -> None:
    c = SpeechChunker(SHAPE)
    c.feed("Hello there my friend,")
    assert c.flush() == ["Hello there my friend,"]
    assert c.feed("Hi, this is a new and different turn, ok") == ["Hi, this is a new and different turn,"]
    assert c.flush() == ["ok"]


def test_flush_gives_the_unfinished_tail() -> None:
    assert run("This is a reasonably long first sentence here. Ok") == (
        ["This is a reasonably long first sentence here."], ["Ok"],
    )


def test_markdown_split_across_deltas_is_held_until_closed() -> None:
    c = SpeechChunker(ChunkerConfig(min_first_chars=5))
    out = c.feed("Please read **the ")
    out += c.feed("important")
    out += c.feed(" part** and [the docs](https://exa")
    assert all("*" not in p and "[" not in p for p in out)
    out += c.feed("mple.com/x), then stop. More")
    out += c.flush()
    assert " ".join(out) == "Please read the important part and the docs, then stop. More"


def test_code_fence_split_across_deltas() -> None:
    text = "Here is the code you asked for:\n```python\nx = 1  # not spoken. Really.\n```\nThat is all of it."
    for step in (1, 2, 5, 13):
        pieces = spoken(text, step=step)
        joined = " ".join(pieces)
        assert "spoken" not in joined and "python" not in joined and "`" not in joined, (step, pieces)
        assert joined == "Here is the code you asked for: That is all of it."


def test_list_markers_split_across_deltas() -> None:
    text = "Shopping list:\n1. Eggs\n2. Milk\n10. Bread and butter\n- Jam\n"
    for step in (1, 3, len(text)):
        assert " ".join(spoken(text, step=step)) == "Shopping list: Eggs. Milk. Bread and butter. Jam.", step


def test_numbers_at_line_start_are_not_markers() -> None:
    assert spoken("2024 was a good year for us all.\n") == ["2024 was a good year for us all."]
    assert spoken("10 apples are in the basket today.\n") == ["10 apples are in the basket today."]


def test_headers_and_emoji_stream() -> None:
    text = "## Weather 🌤️\nIt is sunny today 😎, and warm. Enjoy!"
    assert " ".join(spoken(text, step=2)) == "Weather. It is sunny today, and warm. Enjoy!"


def test_same_result_for_any_delta_size() -> None:
    md = (
        "## Getting started\n\nSure! Here's **how** to do it, step by step:\n\n"
        "1. Install the *package* with `pip install voice`.\n"
        "2. Read the [docs](https://example.com/docs) carefully.\n- Bullet one 🎉\n- Bullet two\n\n"
        "```python\nprint('hello')\n```\n\nThat's all. Dr. Smith agrees, e.g. with 3.14 percent. Done!"
    )
    whole = spoken(md)
    assert whole[0] == "Getting started. Sure!"
    rng = random.Random(7)
    for _ in range(30):
        c = SpeechChunker(SHAPE)
        out: list[str] = []
        i = 0
        while i < len(md):
            n = rng.randint(1, 9)
            out += c.feed(md[i : i + n])
            i += n
        out += c.flush()
        assert out == whole
    joined = " ".join(whole)
    assert joined == clean_for_speech(md)


def test_empty_and_whitespace_deltas() -> None:
    c = SpeechChunker(SHAPE)
    assert c.feed("") == []
    assert c.feed("   ") == []
    assert c.feed("\n\n") == []
    assert c.flush() == []


# ----------------------------------------------------------------------------- length caps


def test_cap_length_prefers_a_clause_then_a_word_then_cuts_hard() -> None:
    text = "one two three four five, six seven eight nine ten eleven twelve thirteen fourteen"
    pieces = cap_length(text, 40)
    assert pieces[0] == "one two three four five,"  # the clause end, not the last word that fits
    assert all(len(p) <= 40 for p in pieces) and " ".join(pieces) == text
    words = " ".join(f"w{i:04d}" for i in range(500))  # no punctuation at all
    pieces = cap_length(words, 60)
    assert all(55 <= len(p) <= 60 for p in pieces[:-1]) and " ".join(pieces) == words
    giant = "x" * 1000  # one "word" longer than the limit
    pieces = cap_length(giant, 300)
    assert [len(p) for p in pieces] == [300, 300, 300, 100] and "".join(pieces) == giant
    assert cap_length("short.", 300) == ["short."]


def test_an_early_clause_does_not_make_a_tiny_piece() -> None:
    text = "Well, " + " ".join(["word"] * 30)
    assert len(cap_length(text, 60)[0]) > 50  # the comma at 5 is under a third of the window


def test_utterances_bound_every_piece_of_a_long_unpunctuated_text() -> None:
    rng = random.Random(7)
    words = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "small", "birds", "sing"]
    text = " ".join(rng.choice(words) for _ in range(4000)) + "."  # ~20,000 characters, one period
    assert len(split_sentences(text)) == 1
    pieces = utterances("Hello there. " + text, 300)
    assert pieces[0] == "Hello there."
    assert all(len(p) <= 300 for p in pieces) and len(pieces) > len(text) // 300
    assert " ".join(pieces[1:]) == text


def test_response_cap_drops_the_rest_at_a_sentence_boundary(caplog: pytest.LogCaptureFixture) -> None:
    cfg = ChunkerConfig(max_response_chars=200)
    sentences = [f"This is sentence number {i} of a long answer." for i in range(40)]
    c = SpeechChunker(cfg)
    pieces: list[str] = []
    with caplog.at_level("WARNING", logger="voice.tts.chunker"):
        for s in sentences:
            pieces += c.feed(s + " ")
        assert c.truncated
        assert c.feed("More text that must not be kept. ") == []
        pieces += c.flush()
    assert 150 < sum(len(p) + 1 for p in pieces) <= 201
    assert " ".join(pieces) == " ".join(sentences[: len(pieces)])  # whole sentences, in order
    assert [r.getMessage() for r in caplog.records if "max_response_chars = 200" in r.getMessage()]
    assert not c.truncated and c.feed("A new reply starts fresh. ") == ["A new reply starts fresh."]


def test_the_default_first_piece_goes_at_a_clause_after_8_characters_or_after_5_words() -> None:
    c = SpeechChunker()
    assert c.feed("The colour printer is in the ") == ["The colour printer is in"]
    c = SpeechChunker()
    assert c.feed("In June, the ") == ["In June,"]
