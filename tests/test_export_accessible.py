"""What a blind user probing the exports with a screen reader found, replayed: headings that said "Question 1,
Question 2" without the questions and all at one level, pictures whose alt text was their file name, a 64-digit
sha256 read aloud between a picture and the chat about it, and no date. Each test reads the export the way a
screen reader does: the HTML through html.parser (its heading outline, each img's alt, the reading order), the
Markdown through a CommonMark parser."""

from __future__ import annotations

import datetime
import hashlib
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from chatbot.core.export import export_session
from chatbot.core.session import ComparedAnswer, ImageRef, Session, Turn
from chatbot.untrusted import visible
from tests.conftest import make_image

HOSTILE = ('is <script>alert(1)</script> *this* _a_ [link](http://x) `code` & <b>bold</b> | ~x~ \\ #\n'
           '# not a heading\x1b]0;pwned\x07\u202eevil\x9b #')


class Reading(HTMLParser):
    """The page in reading order: ("h1".."h6", text), ("img", alt), ("text", words) for text outside headings,
    with ("details", "open"/"close") around a disclosure (closed: a screen reader reads only its summary)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.items: list[tuple[str, str]] = []
        self.tags: list[str] = []
        self._heading: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if re.fullmatch(r"h[1-6]", tag):
            self._heading = tag
            self.items.append((tag, ""))
        elif tag == "img":
            self.items.append(("img", dict(attrs)["alt"] or ""))
        elif tag == "details":
            self.items.append(("details", "open" if "open" in dict(attrs) else "closed"))

    def handle_endtag(self, tag: str) -> None:
        if tag == self._heading:
            self._heading = None
        elif tag == "details":
            self.items.append(("/details", ""))

    def handle_data(self, data: str) -> None:
        if self._heading:
            self.items[-1] = (self._heading, self.items[-1][1] + data)
        elif data.strip():
            self.items.append(("text", data))

    def outline(self) -> list[tuple[int, str]]:
        return [(int(kind[1]), text) for kind, text in self.items if re.fullmatch(r"h[1-6]", kind)]

    def alts(self) -> list[str]:
        return [text for kind, text in self.items if kind == "img"]


def read_html(page: str) -> Reading:
    reading = Reading()
    reading.feed(page)
    reading.close()
    return reading


def inline_text(token) -> tuple[str, set[str]]:  # noqa: ANN001 - a markdown-it token
    """The text a reader is given for an inline token's children, and the kinds of child that are not text."""
    text, kinds = "", set()
    for child in token.children or []:
        if child.type in ("text", "text_special", "code_inline"):
            text += child.content
        elif child.type == "softbreak":
            text += " "
        else:
            kinds.add(child.type)
    return text, kinds


def read_markdown(markdown: str) -> tuple[list[tuple[int, str]], list[str], list[str], set[str]]:
    """The Markdown as a viewer renders it: its headings (level, text), its images' alt texts, its paragraphs'
    text in order, and every kind of inline element in its headings and alt texts that is not plain text."""
    tokens = MarkdownIt("commonmark").parse(markdown)
    outline, alts, blocks, odd = [], [], [], set()
    for index, token in enumerate(tokens):
        if token.type != "inline":
            continue
        opener = tokens[index - 1]
        text, kinds = inline_text(token)
        if opener.type == "heading_open":
            outline.append((int(opener.tag[1]), text))
            odd |= kinds
        else:
            blocks.append(text)
        for child in token.children or []:
            if child.type == "image":
                alt, kinds = inline_text(child)
                alts.append(alt)
                odd |= kinds
    return outline, alts, blocks, odd


def ref(path: Path) -> ImageRef:
    return ImageRef(str(path), hashlib.sha256(path.read_bytes()).hexdigest())


@pytest.fixture
def shapes(tmp_path: Path) -> tuple[ImageRef, ImageRef]:
    root = tmp_path / "photos"
    root.mkdir()
    return ref(make_image(root / "shapes-7.png", (200, 30, 30))), ref(make_image(root / "kitchen.jpg", (20, 180, 40)))


@pytest.fixture
def two_pictures(shapes: tuple[ImageRef, ImageRef]) -> Session:
    """Two pictures, three questions: two about the first, one about the second."""
    first, second = shapes
    return Session(model="m", turns=[
        Turn("What is in the picture?", "a large red circle at the top left", first),
        Turn("What colour is the circle?", "red", first),
        Turn("Is there a bowl on the table?", "yes, a bowl of fruit", second)])


def exported(session: Session, fmt: str, tmp_path: Path) -> str:
    return export_session(session, fmt, tmp_path / f"chat.{fmt}").path.read_text(encoding="utf-8")


def expected_outline(session: Session) -> list[tuple[int, str]]:
    return [(1, f"blip2-chat session {session.id}"), (2, "Picture 1: shapes-7.png"),
            (3, "Question 1: What is in the picture?"), (3, "Question 2: What colour is the circle?"),
            (2, "Picture 2: kitchen.jpg"), (3, "Question 3: Is there a bowl on the table?")]


EXPECTED_ALTS = ["Picture 1, shapes-7.png: a large red circle at the top left",
                 "Picture 2, kitchen.jpg: yes, a bowl of fruit"]


# -- 1. headings: a picture's h2, its questions' h3, each holding the question ---------------------------


def test_html_headings_nest_each_question_under_its_picture_and_say_it(two_pictures, tmp_path) -> None:
    reading = read_html(exported(two_pictures, "html", tmp_path))
    assert reading.outline() == expected_outline(two_pictures)
    for turn in two_pictures.turns:  # the whole question is still in the text below its heading
        assert ("text", turn.question) in reading.items and ("text", turn.answer) in reading.items


def test_markdown_headings_nest_each_question_under_its_picture_and_say_it(two_pictures, tmp_path) -> None:
    outline, _, blocks, odd = read_markdown(exported(two_pictures, "md", tmp_path))
    assert outline == expected_outline(two_pictures) and not odd
    for turn in two_pictures.turns:
        assert f"You: {turn.question}" in blocks and f"Assistant: {turn.answer}" in blocks


def test_a_long_question_is_cut_in_its_heading_and_whole_in_the_text(shapes, tmp_path) -> None:
    question = "Could you tell me " + "very " * 40 + "precisely what is in the top left corner?"
    session = Session(model="m", turns=[Turn(question, "a circle", shapes[0])])
    html_heading = read_html(exported(session, "html", tmp_path)).outline()[2]
    outline, _, blocks, _ = read_markdown(exported(session, "md", tmp_path))
    for level, heading in (html_heading, outline[2]):
        assert level == 3 and heading.startswith("Question 1: Could you tell me very") and heading.endswith("…")
        assert len(heading) <= len("Question 1: ") + 100 and question.startswith(heading[12:-1])
    assert f"You: {question}" in blocks


def test_questions_without_a_picture_never_skip_a_heading_level(shapes, tmp_path) -> None:
    """A turn about no picture (a chat from elsewhere may hold one anywhere) is not put under the picture before it,
    and its h3 is never without an h2 above it."""
    session = Session(model="m", turns=[Turn("Hello?", "hi", None), Turn("What is it?", "a circle", shapes[0]),
                                        Turn("And now?", "nothing", None)])
    expected = [(1, f"blip2-chat session {session.id}"), (2, "Questions without a picture"), (3, "Question 1: Hello?"),
                (2, "Picture 1: shapes-7.png"), (3, "Question 2: What is it?"),
                (2, "Questions without a picture"), (3, "Question 3: And now?")]
    assert read_html(exported(session, "html", tmp_path)).outline() == expected
    assert read_markdown(exported(session, "md", tmp_path))[0] == expected


# -- 2. alt text: what the chat first said about the picture; the sha256 last, out of the way -------------


def test_html_alt_text_is_the_first_answer_about_each_picture(two_pictures, tmp_path) -> None:
    assert read_html(exported(two_pictures, "html", tmp_path)).alts() == EXPECTED_ALTS


def test_markdown_alt_text_is_the_first_answer_about_each_picture(two_pictures, tmp_path) -> None:
    _, alts, _, odd = read_markdown(exported(two_pictures, "md", tmp_path))
    assert alts == EXPECTED_ALTS and not odd


def test_alt_text_without_an_answer_names_the_picture_and_a_long_one_is_cut(shapes, tmp_path) -> None:
    """A stopped answer (cut off mid-word) or one without words is not a description: the picture is named. A long
    answer keeps its whole sentences that fit in about 150 characters, or is cut after a word with an ellipsis."""
    first, second = shapes
    long_sentence = "a circle " + "and a circle " * 20 + "at last"
    session = Session(model="m", turns=[
        Turn("What is it?", "a large red ci", first, stopped=True), Turn("And?", "", first),
        Turn("This one?", "A bowl of fruit on a table. " + "It is a wooden table with four legs. " * 5, second),
        Turn("Back?", long_sentence, first)])
    other = Path(first.source).with_name("other.png")
    other.write_bytes(Path(first.source).read_bytes())  # the same bytes under another name: another picture
    session.turns.append(Turn("Last?", "", ref(other), compared=[ComparedAnswer(second, "ignored: said before")]))
    alts = read_html(exported(session, "html", tmp_path)).alts()
    said = alts[0].removeprefix("Picture 1, shapes-7.png: ")
    assert said.endswith(" circle and a…") and long_sentence.startswith(said[:-1])  # after a word
    assert alts[1] == ("Picture 2, kitchen.jpg: A bowl of fruit on a table. It is a wooden table with four legs. "
                       "It is a wooden table with four legs. It is a wooden table with four legs.")
    assert alts[2:] == [alts[0], "Picture 3, other.png",  # the first picture again; one nothing was said about
                        "kitchen.jpg"]  # a /compare picture, right after the answer about it: named
    assert len(said) <= 150 and len(alts[1]) - len("Picture 2, kitchen.jpg: ") <= 150
    assert read_markdown(exported(session, "md", tmp_path))[1] == alts


def test_html_sha256_is_in_a_closed_disclosure_after_the_chat_about_the_picture(two_pictures, tmp_path) -> None:
    first, second = (two_pictures.turns[0].image, two_pictures.turns[2].image)
    items = read_html(exported(two_pictures, "html", tmp_path)).items
    for number, image, last_answer in ((1, first, "red"), (2, second, "yes, a bowl of fruit")):
        holding = [index for index, (_, text) in enumerate(items) if image.sha256 in text]
        assert len(holding) == 1  # once, and only inside the disclosure
        opened = max(index for index, (kind, _) in enumerate(items[:holding[0]]) if kind == "details")
        assert items[opened] == ("details", "closed")
        assert items[opened + 1] == ("text", f"File details of picture {number}")  # its summary: all that is read
        assert ("/details", "") in items[holding[0]:]
        assert items[opened - 1] == ("text", last_answer)  # after the last answer about the picture
    alt_at = [index for index, (kind, _) in enumerate(items) if kind == "img"]
    assert all(items[index + 1][0] == "h3" for index in alt_at)  # the picture, then its first question: nothing between


def test_markdown_sha256_is_one_short_line_at_the_end_of_the_pictures_section(two_pictures, tmp_path) -> None:
    markdown = exported(two_pictures, "md", tmp_path)
    lines = markdown.splitlines()
    for number, turn in ((1, two_pictures.turns[0]), (2, two_pictures.turns[2])):
        [line] = [line for line in lines if turn.image.sha256 in line]  # type: ignore[union-attr]
        assert line == (f"File details of picture {number}: `{turn.image.source}`, sha256 "  # type: ignore[union-attr]
                        f"`{turn.image.sha256}`.")  # type: ignore[union-attr]
    sections = re.split(r"^## ", markdown, flags=re.MULTILINE)[1:]
    for section in sections:  # the file line closes the section: after its last answer, before the next picture
        body = [line for line in section.strip().splitlines() if line]
        assert body[-1].startswith("File details of picture ") and body[-2].startswith("**Assistant:**")
        assert body[1].startswith("![Picture ") and body[2].startswith("### Question ")


# -- 3. the date the export was made ----------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["md", "html"])
def test_the_export_says_the_date_it_was_made_under_its_title(two_pictures, tmp_path, fmt) -> None:
    before = datetime.date.today()
    text = exported(two_pictures, fmt, tmp_path)
    days = {before.isoformat(), datetime.date.today().isoformat()}  # made over midnight: either day
    if fmt == "html":
        items = read_html(text).items
        heading = next(index for index, (kind, _) in enumerate(items) if kind == "h1")
        assert items[heading + 1][1] in {f"Exported on {day}." for day in days}
    else:
        blocks = read_markdown(text)[2]
        assert blocks[0] in {f"Exported on {day}." for day in days}
        assert text.startswith(f"# blip2-chat session {two_pictures.id}\n\nExported on ")


def test_the_date_can_be_given(two_pictures) -> None:
    from chatbot.core.export_pages import export_html, export_markdown

    made = datetime.date(2025, 3, 4)
    assert "<p>Exported on 2025-03-04.</p>" in export_html(two_pictures, {}, made=made)
    assert "\n\nExported on 2025-03-04.\n\n" in export_markdown(two_pictures, made=made)


# -- 4. hostile text stays text in headings and alt --------------------------------------------------------


def test_hostile_question_and_answer_stay_text_in_html_headings_and_alt(shapes, tmp_path) -> None:
    session = Session(model="m", turns=[Turn(HOSTILE, HOSTILE, shapes[0])])
    page = exported(session, "html", tmp_path)
    assert "<script" not in page.lower() and not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202e]", page)
    reading = read_html(page)
    assert set(reading.tags) <= {"html", "head", "meta", "title", "style", "body", "main", "h1", "h2", "h3", "p",
                                 "code", "strong", "em", "img", "details", "summary", "a", "span"}
    one_line = visible(" ".join(HOSTILE.split()))  # white space a space, every other control shown
    assert "\\x1b]0;pwned\\x07\\u202eevil\\x9b" in one_line
    assert reading.outline()[2] == (3, f"Question 1: {one_line[:one_line.rindex(' ', 0, 99)]}…")
    assert reading.alts() == [f"Picture 1, shapes-7.png: {one_line}"]


def test_hostile_question_and_answer_stay_text_in_markdown_headings_and_alt(shapes, tmp_path) -> None:
    short = "<script>alert(1)</script> *a* _b_ [c](http://x) `d` & | ~e~ \\ # f \x1b[2J #"
    session = Session(model="m", turns=[Turn(short, short, shapes[0]), Turn(HOSTILE, "fine", shapes[0])])
    markdown = exported(session, "md", tmp_path)
    assert "\x1b" not in markdown and "\u202e" not in markdown and "\x9b" not in markdown
    outline, alts, _, odd = read_markdown(markdown)
    assert not odd  # no HTML, emphasis, link or code span in a heading or an alt text: text only
    assert outline[2] == (3, f"Question 1: {visible(short)}")  # the trailing # too: it does not close the heading
    assert outline[3][0] == 3 and outline[3][1].startswith("Question 2: is <script>alert(1)</script> *this* _a_")
    assert len(outline) == 4  # the question's "# not a heading" line made no heading
    assert alts == [f"Picture 1, shapes-7.png: {visible(short)}"]


def test_html_questions_and_answers_are_read_in_their_own_language_and_direction(shapes, tmp_path) -> None:
    """The page's own words are English (`lang="en"`), but a question in Arabic or Chinese is not: each question and
    answer is a span of unknown language (`lang=""`: a screen reader uses the reader's voice, not an English one)
    whose direction follows its letters (`dir="auto"`), in the headings too."""
    session = Session(model="m", turns=[Turn("ما هذا؟", "这是一个红色的圆", shapes[0])])
    page = exported(session, "html", tmp_path)
    assert '<h3>Question 1: <span lang="" dir="auto">ما هذا؟</span></h3>' in page
    assert '<strong>You:</strong> <span lang="" dir="auto">ما هذا؟</span>' in page
    assert '<strong>Assistant:</strong> <span lang="" dir="auto">这是一个红色的圆</span>' in page
    assert page.count("<span") == page.count('<span lang="" dir="auto">') == 3
