"""Tokenising VK comments: mentions, links, hashtags, emoji, hyphens, Latin, numbers, offsets."""

from __future__ import annotations

import random
import unicodedata

import pytest

from src.morphology.tokenizer import (
    Mention,
    MentionKind,
    TokenKind,
    TokenSource,
    fold_yo,
    has_cyrillic,
    tokenize,
)


def words(text: str) -> list[str]:
    return tokenize(text).words


def test_plain_sentence_lower_cased() -> None:
    assert words("Опять НЕТ горячей воды!") == ["опять", "нет", "горячей", "воды"]


def test_user_and_community_mentions_keep_the_name_only() -> None:
    result = tokenize("[id123|Иван Петров], [club45|Клуб «Вода»] и [public7|Новости] согласны")
    assert result.words == ["иван", "петров", "клуб", "вода", "и", "новости", "согласны"]
    assert result.mentions == (
        Mention(MentionKind.USER, "id123", 123, "Иван Петров"),
        Mention(MentionKind.COMMUNITY, "club45", 45, "Клуб «Вода»"),
        Mention(MentionKind.COMMUNITY, "public7", 7, "Новости"),
    )
    assert [m.owner_id for m in result.mentions] == [123, -45, -7]
    sources = [token.source for token in result.tokens]
    mention, text = TokenSource.MENTION, TokenSource.TEXT
    assert sources == [mention, mention, mention, mention, text, mention, text]


def test_screen_name_mentions() -> None:
    result = tokenize("[durov|Павел], спроси @durov или @id5, а не a.b@mail.ru")
    assert result.words == ["павел", "спроси", "или", "а", "не"]
    assert result.mentions == (
        Mention(MentionKind.SCREEN_NAME, "durov", None, "Павел"),
        Mention(MentionKind.SCREEN_NAME, "durov", None, None),
        Mention(MentionKind.USER, "id5", 5, None),
    )
    assert result.links == ("a.b@mail.ru",)


@pytest.mark.parametrize(
    ("text", "link"),
    [
        ("смотри https://vk.com/wall-1_2.", "https://vk.com/wall-1_2"),
        ("смотри http://example.com/a?b=c&d=e, тут", "http://example.com/a?b=c&d=e"),
        ("смотри www.mos.ru! тут", "www.mos.ru"),
        ("смотри vk.com/club1", "vk.com/club1"),
        ("(смотри youtu.be/xyz) тут", "youtu.be/xyz"),
        ("смотри сайт.рф/путь", "сайт.рф/путь"),
        (
            "(смотри https://ru.wikipedia.org/wiki/Вода_(значения)) тут",
            "https://ru.wikipedia.org/wiki/Вода_(значения)",
        ),
    ],
)
def test_links_are_reported_not_words(text: str, link: str) -> None:
    result = tokenize(text)
    assert result.links == (link,)
    assert result.words == (["смотри", "тут"] if "тут" in text else ["смотри"])


def test_no_false_links() -> None:
    result = tokenize("т.е. 3.14 и т.д., конец.Начало")
    assert result.links == ()
    assert result.words == ["т", "е", "и", "т", "д", "конец", "начало"]


def test_hashtags() -> None:
    result = tokenize("#ЖКХ #горячая_вода #news@club1 пункт #1")
    assert result.hashtags == ("жкх", "горячая_вода", "news")
    assert result.words == ["жкх", "горячая", "вода", "news", "пункт"]
    assert result.numbers == ["1"]
    hashtag_tokens = [t for t in result.tokens if t.source is TokenSource.HASHTAG]
    # The parts of one hashtag form a phrase; separate hashtags do not.
    assert [t.joined for t in hashtag_tokens] == [False, False, True, False]


def test_emoji_and_symbols_dropped_and_break_phrases() -> None:
    result = tokenize("горячая 😡😡 вода 👍🏻❤️ ура!!! ))) ©™ №5")
    assert result.words == ["горячая", "вода", "ура"]
    assert [t.joined for t in result.tokens if t.kind is TokenKind.WORD] == [False, False, False]


@pytest.mark.parametrize(
    "word", ["кто-то", "из-за", "по-русски", "что-нибудь", "covid-19", "санкт-петербург"]
)
def test_hyphenated_words_kept_whole(word: str) -> None:
    assert words(f"Вот {word.capitalize()} тут") == ["вот", word, "тут"]


def test_dashes_and_stray_hyphens_split() -> None:
    assert words("вода — жизнь, -привет- а--б") == ["вода", "жизнь", "привет", "а", "б"]


def test_latin_words_kept() -> None:
    assert words("Купил iPhone, WiFi не работает, don't ask") == [
        "купил",
        "iphone",
        "wifi",
        "не",
        "работает",
        "don't",
        "ask",
    ]


def test_numbers_are_not_words() -> None:
    result = tokenize("в 90-х годах 2-й раз, 3,5 часа, в 12:30, 1000000 рублей, 10кг")
    assert result.numbers == ["90-х", "2-й", "3,5", "12:30", "1000000", "10"]
    assert result.words == ["в", "годах", "раз", "часа", "в", "рублей", "кг"]


def test_yo_kept_and_lower_cased() -> None:
    assert words("ЁЛКА ещё Всё") == ["ёлка", "ещё", "всё"]
    assert fold_yo("Ёлка ещё") == "Елка еще"


def test_normalisation_nfd_entities_and_br() -> None:
    decomposed = unicodedata.normalize("NFD", "йод и ёж")
    assert decomposed != "йод и ёж"
    assert words(decomposed) == ["йод", "и", "ёж"]
    assert words("&quot;вода&quot; &amp; свет<br>конец<br/>") == ["вода", "свет", "конец"]
    assert words("ва\u0301за") == ["ваза"]


def test_offsets_point_into_the_normalised_text() -> None:
    result = tokenize("[id1|Аня], Кто-то звонил: https://x.ru #Вода_Горячая в 12:30 İstanbul")
    for token in result.tokens:
        assert result.text[token.start : token.end].lower() == token.text


def test_phrase_joins_only_across_spaces() -> None:
    result = tokenize("горячая вода, горячая\nвода горячая  вода горячая 5 вода")
    assert [t.joined for t in result.tokens] == [
        False,  # горячая
        True,  # вода
        False,  # горячая (after a comma)
        False,  # вода (after a newline)
        True,  # горячая
        True,  # вода (two spaces)
        True,  # горячая
        True,  # 5
        True,  # вода: joined to the number; the analyzer's words do not join across it
    ]


def test_empty_and_symbol_only_texts() -> None:
    assert tokenize("").tokens == ()
    assert tokenize("   \n ").tokens == ()
    assert tokenize("😂😂😂 !!! ...").tokens == ()


def test_has_cyrillic() -> None:
    assert has_cyrillic("hello Мир")
    assert not has_cyrillic("hello world 123 😂")


def test_offsets_hold_on_random_text() -> None:
    # Token offsets come from the lengths of the matched pieces alone; any gap would shift them.
    alphabet = "абвгдеёжзийклмнопрстуфхцчшщъыьэюяАБВЁabcXYZ0123456789 -_'’.,!?:;()[]|@#/\n\t😀❤️́"
    rng = random.Random(7)
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 120)))
        result = tokenize(text)
        for token in result.tokens:
            assert result.text[token.start : token.end].lower() == token.text


@pytest.mark.parametrize(
    "text",
    [
        "!" * 100_000,
        "a." * 50_000,
        "a.a " * 25_000 + "x.ru",
        "[" * 100_000,
        "[id1|" * 20_000,
        "#" * 100_000,
        "@a" * 50_000,
        "a@" * 50_000,
        "http://" * 14_000,
        "-a" * 50_000,
        "1." * 50_000,
        "😂" * 50_000,
    ],
    ids=lambda text: repr(text[:8]),
)
@pytest.mark.timeout(10)
def test_pathological_texts_take_linear_time(text: str) -> None:
    # A quadratic pattern takes minutes on 100,000 characters; each of these takes milliseconds.
    result = tokenize(text)
    # And the fast path reads them right: every token is where it says, in order, no overlap.
    end = 0
    for token in result.tokens:
        assert token.start >= end
        assert result.text[token.start : token.end].lower() == token.text
        end = token.end
    repeated = tokenize(text[: len(text) // 1000])  # the same pattern, a thousandth as long
    assert {token.kind for token in result.tokens} == {token.kind for token in repeated.tokens}
