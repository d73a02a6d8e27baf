"""Split VK comment text into lower-case word and number tokens; report mentions, links, hashtags.

What becomes of each piece of a comment:

- `[id123|Имя]`, `[club45|Name]` (also `public`, `event`, `[screen_name|Name]`): reported as a
  `Mention`; the display name stays in the text as words (source `MENTION`), the id part does not.
- `@screen_name`, `@id123`: reported as a `Mention` with no name; no words.
- links (`http(s)://…`, `www.…`, bare `vk.com/…`-style domains, `сайт.рф`) and e-mail addresses:
  reported in `links` as written (trailing punctuation stripped); no words.
- `#тег`: reported in `hashtags` (lower-case, without `#` and without a `@community` suffix); its
  parts (split at `_`) stay as words (source `HASHTAG`). `#1` (no letter) is not a hashtag.
- numbers (`42`, `3,5`, `12:30`, `90-х`): `NUMBER` tokens, not words.
- words: runs of letters and digits starting with a letter, hyphenated words kept whole
  (`кто-то`, `из-за`, `covid-19`), Latin kept, `ё` kept, lower-cased.
- emoji, punctuation and other symbols: dropped.

Offsets refer to `TokenizedText.text`: the input after NFC normalisation, HTML entity decoding
and `<br>` → newline (VK still returns both in older texts), stress marks removed.
"""

# Russian text is this module's subject: Cyrillic letters that look like Latin ones are meant.

from __future__ import annotations

import html
import re
import unicodedata
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple


class TokenKind(StrEnum):
    WORD = "word"
    NUMBER = "number"


class TokenSource(StrEnum):
    """Where in the comment a token came from."""

    TEXT = "text"
    MENTION = "mention"
    HASHTAG = "hashtag"


class MentionKind(StrEnum):
    USER = "user"
    COMMUNITY = "community"
    SCREEN_NAME = "screen_name"


class Token(NamedTuple):
    """One word or number; `text` is lower-case."""

    text: str
    kind: TokenKind
    source: TokenSource
    start: int
    end: int
    # Only spaces (or `_` inside a hashtag) separate it from the previous token of the same
    # stretch: no newline, punctuation, emoji or link in between. Such tokens may form a phrase.
    joined: bool


@dataclass(frozen=True, slots=True)
class Mention:
    """A reference to a VK user or community."""

    kind: MentionKind
    target: str  # "id123", "club45", "durov": the part before `|`, or after `@`
    object_id: int | None  # 123 for id123, 45 for club45; None for a screen name
    name: str | None  # the display name as written; None for `@screen_name`

    @property
    def owner_id(self) -> int | None:
        """The VK owner id: positive for users, negative for communities."""
        if self.object_id is None:
            return None
        return -self.object_id if self.kind is MentionKind.COMMUNITY else self.object_id


class Stretch(NamedTuple):
    """A stretch of text whose tokens are words and numbers (between mentions, links…)."""

    start: int
    end: int
    source: TokenSource


class Segmentation(NamedTuple):
    """A text cut into stretches of plain words, with what was cut out of it."""

    text: str  # normalised; every offset refers to it
    # `text` lower-cased, with the same offsets; `text` itself when lower-casing would move
    # offsets (a few characters such as "İ" grow), and then `lowered` is False.
    scan_text: str
    lowered: bool
    stretches: list[Stretch]
    mentions: list[Mention]
    links: list[str]
    hashtags: list[str]


@dataclass(frozen=True, slots=True)
class TokenizedText:
    text: str  # normalised; token offsets refer to it
    tokens: tuple[Token, ...]
    mentions: tuple[Mention, ...]
    links: tuple[str, ...]
    hashtags: tuple[str, ...]

    @property
    def words(self) -> list[str]:
        """The word tokens' text, in order."""
        return [token.text for token in self.tokens if token.kind is TokenKind.WORD]

    @property
    def numbers(self) -> list[str]:
        """The number tokens' text, in order."""
        return [token.text for token in self.tokens if token.kind is TokenKind.NUMBER]


# One token with the separator before it: (separator, number, word). Separators are runs of
# non-word characters and `_`; after one comes a digit (a number) or a letter (a word), so
# matches are contiguous and offsets follow from the lengths alone. The separator is possessive
# and the token optional, so that a long run of symbols is read once (not once per position,
# which is quadratic); the last match may then be the trailing separator with no token.
# Numbers: 42, 3.5, 3,5, 12:30, 90-х, 2-й. Words start with a letter; letters and digits after
# it, parts joined by single hyphens or apostrophes.
TOKEN_PATTERN = re.compile(
    r"([\W_]*+)"
    r"(?:(\d+(?:[.,:]\d+)*(?:-[^\W\d_]{1,3}(?!\w))?)"
    r"|([^\W\d_][^\W_]*(?:[-'’][^\W_]+)*))?"
)
_LETTER = re.compile(r"[^\W\d_]")
_CYRILLIC = re.compile(r"[а-яёА-ЯЁ]")

_MENTION = re.compile(
    r"\[(?:(id|club|public|event)(\d{1,12})|([a-z][a-z0-9_.]{0,31}))\|([^\[\]|\n]{0,200})\]",
    re.IGNORECASE,
)
_AT_NAME = re.compile(
    r"(?<![\w@.])@([a-z0-9_](?:[a-z0-9_.]{0,30}[a-z0-9_])?)(?![\w@])", re.IGNORECASE
)
_ID_NAME = re.compile(r"(id|club|public|event)(\d{1,12})", re.IGNORECASE)
_EMAIL = re.compile(
    r"(?<![\w.+%-])[a-z0-9._%+-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,24}(?![\w-])",
    re.IGNORECASE,
)
_LINK_TAIL = r"""[^\s<>"'«»\[\]|]*"""
_URL = re.compile(r"""(?:https?|ftp)://[^\s<>"'«»\[\]|]+|www\.[^\s<>"'«»\[\]|]+""", re.IGNORECASE)
# Bare domains only with a TLD from this list: enough for what people paste into comments,
# and no false hits on "т.е." or "3.14". Each pattern starts with a character class (no
# IGNORECASE flag), so the regex engine skips other text at C speed; the lookbehind after the
# first character then rejects starts inside a word or a longer name ("приветvk.com",
# "a.b.vk.com"), which also keeps "a.a.a.a…" linear.
_TLDS = "ru|com|net|org|info|io|me|cc|su|ua|by|kz|uz|tv|be|ly|gl|app|dev|pro|online|site|store|shop"
_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
_DOMAIN = re.compile(
    rf"[a-zA-Z0-9](?<![\w.@/-].)(?:[a-zA-Z0-9-]{{0,61}}[a-zA-Z0-9])?\.(?:{_LABEL}\.)*"
    rf"(?i:{_TLDS})(?![\w-])(?::\d{{1,5}})?(?:/{_LINK_TAIL})?"
)
_CYRILLIC_LABEL = r"[а-яёА-ЯЁ0-9](?:[а-яёА-ЯЁ0-9-]{0,61}[а-яёА-ЯЁ0-9])?"
_CYRILLIC_DOMAIN = re.compile(
    rf"[а-яёА-ЯЁ0-9](?<![\w.@/-].)(?:[а-яёА-ЯЁ0-9-]{{0,61}}[а-яёА-ЯЁ0-9])?\."
    rf"(?:{_CYRILLIC_LABEL}\.)*(?:рф|РФ)(?![\w-])(?::\d{{1,5}})?(?:/{_LINK_TAIL})?"
)
_HASHTAG = re.compile(r"(?<![\w&#/])#(\w{1,100})(?:@[a-z0-9_.]*[a-z0-9_])?", re.IGNORECASE)
_STRESS = "\u0301"
_BR = re.compile(r"<br\s*/?>", re.IGNORECASE)
_LINK_TRAILING = ".,;:!?…)»\"'"
# What may stand between two words of one phrase: spaces, and `_` inside a hashtag.
_JOINERS = " \t\u00a0\u202f"
_HASHTAG_JOINERS = _JOINERS + "_"

# Span kinds, in the order they win when two spans start at the same place and are as long.
_SPAN_MENTION, _SPAN_LINK, _SPAN_AT, _SPAN_HASHTAG = range(4)


class _Span(NamedTuple):
    start: int
    end: int
    kind: int
    match: re.Match[str]


def normalize_text(text: str) -> str:
    """NFC, HTML entities decoded, `<br>` as newline, no stress marks: what offsets refer to."""
    if "<" in text:
        text = _BR.sub("\n", text)
    if "&" in text:
        text = html.unescape(text)
    if not text.isascii():
        if not unicodedata.is_normalized("NFC", text):
            text = unicodedata.normalize("NFC", text)
        if _STRESS in text:  # "ва́за": a stress mark would split the word
            text = text.replace(_STRESS, "")
    return text


def has_cyrillic(text: str) -> bool:
    """Whether the text contains at least one Cyrillic letter."""
    return _CYRILLIC.search(text) is not None


def fold_yo(word: str) -> str:
    """`ё` → `е`, for comparisons that must not depend on how the writer spelt it."""
    return word.replace("ё", "е").replace("Ё", "Е")


def _strip_link(text: str, start: int, end: int) -> int:
    """The end of a link without the punctuation that follows it in a sentence."""
    while end > start and text[end - 1] in _LINK_TRAILING:
        # `https://ru.wikipedia.org/wiki/Вода_(значения)` keeps its own closing parenthesis.
        if text[end - 1] == ")" and text.count("(", start, end) >= text.count(")", start, end):
            break
        end -= 1
    return end


def _find_spans(text: str) -> list[_Span]:
    """Mentions, links, e-mails, @names and hashtags, non-overlapping, in text order."""
    found: list[_Span] = []
    if "[" in text:
        found.extend(_Span(m.start(), m.end(), _SPAN_MENTION, m) for m in _MENTION.finditer(text))
    if "@" in text:
        found.extend(_Span(m.start(), m.end(), _SPAN_LINK, m) for m in _EMAIL.finditer(text))
        found.extend(_Span(m.start(), m.end(), _SPAN_AT, m) for m in _AT_NAME.finditer(text))
    if "://" in text or "www." in text or "WWW." in text:
        for m in _URL.finditer(text):
            end = _strip_link(text, m.start(), m.end())
            found.append(_Span(m.start(), end, _SPAN_LINK, m))
    if "." in text:
        patterns = (_DOMAIN, _CYRILLIC_DOMAIN) if ".рф" in text or ".РФ" in text else (_DOMAIN,)
        for pattern in patterns:
            for m in pattern.finditer(text):
                end = _strip_link(text, m.start(), m.end())
                found.append(_Span(m.start(), end, _SPAN_LINK, m))
    if "#" in text:
        found.extend(
            _Span(m.start(), m.end(), _SPAN_HASHTAG, m)
            for m in _HASHTAG.finditer(text)
            if _LETTER.search(m.group(1))
        )
    if len(found) < 2:
        return found
    # Earliest first, then longest (`www.vk.com` the link, not `vk.com`), then by kind.
    found.sort(key=lambda span: (span.start, span.start - span.end, span.kind))
    spans: list[_Span] = []
    last_end = -1
    for span in found:
        if span.start >= last_end:
            spans.append(span)
            last_end = span.end
    return spans


def is_joiner(separator: str, source: TokenSource = TokenSource.TEXT) -> bool:
    """Whether two tokens with this between them may form a phrase (spaces; `_` in hashtags)."""
    joiners = _HASHTAG_JOINERS if source is TokenSource.HASHTAG else _JOINERS
    return separator == " " or not separator.strip(joiners)


def segment(text: str) -> Segmentation:
    """Normalise `text`, cut out mentions, links and hashtags, and say where the words are."""
    text = normalize_text(text)
    scan_text = text.lower()
    lowered = len(scan_text) == len(text)
    if not lowered:
        scan_text = text
    stretches: list[Stretch] = []
    mentions: list[Mention] = []
    links: list[str] = []
    hashtags: list[str] = []
    pos = 0
    for span in _find_spans(text):
        if span.start > pos:
            stretches.append(Stretch(pos, span.start, TokenSource.TEXT))
        m = span.match
        if span.kind == _SPAN_MENTION:
            prefix, number, screen_name, name = m.groups()
            mentions.append(_mention(prefix, number, screen_name, name))
            stretches.append(Stretch(m.start(4), m.end(4), TokenSource.MENTION))
        elif span.kind == _SPAN_LINK:
            links.append(text[span.start : span.end])
        elif span.kind == _SPAN_AT:
            screen_name = m.group(1)
            id_match = _ID_NAME.fullmatch(screen_name)
            if id_match:
                mentions.append(_mention(id_match.group(1), id_match.group(2), None, None))
            else:
                mentions.append(_mention(None, None, screen_name, None))
        else:
            hashtags.append(m.group(1).lower())
            stretches.append(Stretch(m.start(1), m.end(1), TokenSource.HASHTAG))
        pos = span.end
    if pos < len(text):
        stretches.append(Stretch(pos, len(text), TokenSource.TEXT))
    return Segmentation(text, scan_text, lowered, stretches, mentions, links, hashtags)


def tokenize(text: str) -> TokenizedText:
    """Split `text` into lower-case tokens and collect its mentions, links and hashtags."""
    seg = segment(text)
    word_kind, number_kind = TokenKind.WORD, TokenKind.NUMBER
    new = tuple.__new__  # skips NamedTuple's Python-level __new__: this loop is hot
    tokens: list[Token] = []
    append = tokens.append
    scan_text, lowered = seg.scan_text, seg.lowered
    for start, end, source in seg.stretches:
        pos = start
        joiners = _HASHTAG_JOINERS if source is TokenSource.HASHTAG else _JOINERS
        for separator, number, word in TOKEN_PATTERN.findall(scan_text, start, end):
            begin = pos + len(separator)
            joined = pos != start and (separator == " " or not separator.strip(joiners))
            if word:
                pos = begin + len(word)
                value, kind = (word if lowered else word.lower()), word_kind
            elif number:
                pos = begin + len(number)
                value, kind = number, number_kind
            else:  # the separator at the end
                break
            append(new(Token, (value, kind, source, begin, pos, joined)))
    return TokenizedText(
        text=seg.text,
        tokens=tuple(tokens),
        mentions=tuple(seg.mentions),
        links=tuple(seg.links),
        hashtags=tuple(seg.hashtags),
    )


def _mention(
    prefix: str | None, number: str | None, screen_name: str | None, name: str | None
) -> Mention:
    if prefix is not None and number is not None:
        kind = MentionKind.USER if prefix.lower() == "id" else MentionKind.COMMUNITY
        return Mention(kind, f"{prefix.lower()}{number}", int(number), name)
    assert screen_name is not None
    return Mention(MentionKind.SCREEN_NAME, screen_name.lower(), None, name)
