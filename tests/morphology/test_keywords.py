"""Keywords: TF-IDF against a background, plain counts without, phrases, stop words."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from src.morphology.analyzer import MorphAnalyzer, TextAnalysis
from src.morphology.keywords import (
    CorpusStats,
    Keyword,
    KeywordExtractor,
    TermTally,
    extract_keywords,
    russian_stop_words,
)
from tests.morphology.conftest import make_settings

HOT_WATER = [
    "Опять нет горячей воды! Сколько можно?",
    "Горячую воду отключили без предупреждения, это не нормально",
    "Когда дадут горячую воду? Третий день без горячей воды",
    "У нас тоже нет горячей воды, звонили в управляющую компанию — не отвечают",
    "Горячая вода еле тёплая, это вообще не горячая вода",
    "Где горячая вода??? Ребёнка нечем помыть 😡",
    "Горячей воды не будет до пятницы, так сказали в диспетчерской",
    "Это издевательство, горячую воду отключают каждый месяц",
]
OTHER_TOPICS = [
    "Лифт опять сломался, третий день ходим пешком",
    "Мусор не вывозят уже неделю, контейнеры переполнены",
    "Во дворе сломали детскую площадку",
    "Когда отремонтируют дорогу у школы? Ямы огромные",
    "Холодная вода ржавая, пить невозможно",
    "Спасибо за новые лавочки в парке!",
    "Парковка во дворе забита, машины стоят на газоне",
    "Это не нормально, что лифт не работает",
    "Свет в подъезде не горит уже месяц",
    "Когда уберут снег с тротуаров? Это не дело",
    "Из крана течёт вода с песком",
    "Управляющая компания не отвечает на звонки",
]


def analyse(analyzer: MorphAnalyzer, texts: list[str]) -> list[TextAnalysis]:
    return analyzer.analyze_many(texts)


def terms(keywords: list[Keyword]) -> list[str]:
    return [keyword.term for keyword in keywords]


@pytest.fixture(scope="module")
def extractor(analyzer: MorphAnalyzer) -> KeywordExtractor:
    return KeywordExtractor(make_settings(), analyzer=analyzer)


def test_hot_water_ranks_top_against_background(
    analyzer: MorphAnalyzer, extractor: KeywordExtractor
) -> None:
    background = extractor.corpus_stats(analyse(analyzer, OTHER_TOPICS))
    assert background.documents == len(OTHER_TOPICS)
    keywords = extractor.extract(analyse(analyzer, HOT_WATER), top_n=5, background=background)
    top = terms(keywords)
    assert {"вода", "горячий вода"} <= set(top[:3])
    assert set(top[:3]) == {"вода", "горячий", "горячий вода"}
    phrase = next(k for k in keywords if k.term == "горячий вода")
    assert phrase.phrase == "горячая вода"
    assert phrase.is_phrase
    assert phrase.count == 10
    assert phrase.documents == 8
    assert keywords == sorted(keywords, key=lambda k: (-k.score, -k.count, k.term))


def test_background_lowers_common_words(
    analyzer: MorphAnalyzer, extractor: KeywordExtractor
) -> None:
    # "компания" is as frequent in the target as "ребёнок", but common in the background.
    target = analyse(analyzer, HOT_WATER)
    background = extractor.corpus_stats(analyse(analyzer, OTHER_TOPICS))
    scores = {k.term: k.score for k in extractor.extract(target, top_n=100, background=background)}
    assert scores["ребёнок"] > scores["компания"]
    plain = {k.term: k.score for k in extractor.extract(target, top_n=100)}
    assert plain["ребёнок"] == plain["компания"] == 1.0


def test_stop_words_never_keywords(analyzer: MorphAnalyzer, extractor: KeywordExtractor) -> None:
    stop = {"не", "это", "нет", "так", "уже", "опять", "тоже", "можно", "когда", "будет"}
    assert {"не", "это"} <= russian_stop_words()
    target = analyse(analyzer, HOT_WATER + OTHER_TOPICS)
    background = extractor.corpus_stats(analyse(analyzer, OTHER_TOPICS))
    for keywords in (
        extractor.extract(target, top_n=1000),
        extractor.extract(target, top_n=1000, background=background),
    ):
        words = {word for keyword in keywords for word in keyword.term.split()}
        assert not words & stop
    # "не" is left out of keywords only: the analysis keeps it (negation matters to sentiment).
    assert "не" in target[1].lemmas


def test_plain_frequency_without_background(
    analyzer: MorphAnalyzer, extractor: KeywordExtractor
) -> None:
    keywords = extractor.extract(analyse(analyzer, HOT_WATER), top_n=4)
    assert [(k.term, k.score, k.count, k.documents) for k in keywords] == [
        ("вода", 10.0, 10, 8),  # equal scores and counts: alphabetical
        ("горячий", 10.0, 10, 8),
        ("горячий вода", 10.0, 10, 8),
        ("дать", 1.0, 1, 1),
    ]


def test_bigram_threshold(analyzer: MorphAnalyzer) -> None:
    texts = ["Новый дом построили", "новые окна", "Новый дом!", "старый дом"]
    documents = analyse(analyzer, texts)
    default = KeywordExtractor(make_settings(), analyzer=analyzer)
    assert "новый дом" not in terms(default.extract(documents, top_n=50))  # 2 < 3
    lower = KeywordExtractor(make_settings(bigram_min_count=2), analyzer=analyzer)
    keyword = next(k for k in lower.extract(documents, top_n=50) if k.term == "новый дом")
    assert (keyword.count, keyword.documents, keyword.phrase) == (2, 2, "новый дом")
    assert "старый дом" not in terms(lower.extract(documents, top_n=50))  # once only


def test_phrases_need_adjacent_content_words(
    analyzer: MorphAnalyzer, extractor: KeywordExtractor
) -> None:
    texts = [
        "вода не горячая",  # a stop word between
        "горячая, вода",  # punctuation between
        "горячая\nвода",  # a line break between
        "горячая 5 вода",  # a number between
        "горячая https://vk.com вода",  # a link between
        "горячая 😡 вода",  # emoji between
        "вода вода вода",  # no phrase of a word with itself
    ] * 3
    keywords = extractor.extract(analyse(analyzer, texts), top_n=100)
    assert not [k for k in keywords if k.is_phrase]


def test_content_pos_setting(analyzer: MorphAnalyzer) -> None:
    documents = analyse(analyzer, ["Горячая вода быстро кончилась, WiFi тоже, мы сами виноваты"])
    default = KeywordExtractor(make_settings(), analyzer=analyzer).extract(documents, top_n=50)
    # Not the adverb, pronouns, short adjective ("виноваты": ADJS), Latin, nor the phrase (once).
    assert set(terms(default)) == {"горячий", "вода", "кончиться"}
    nouns = KeywordExtractor(make_settings(content_pos=["NOUN", "LATN"]), analyzer=analyzer)
    assert set(terms(nouns.extract(documents, top_n=50))) == {"вода", "wifi"}


def test_extra_stop_words_and_yo(analyzer: MorphAnalyzer) -> None:
    documents = analyse(analyzer, ["Ёлка во дворе, елка у школы, горячая вода"] * 3)
    extractor = KeywordExtractor(
        make_settings(extra_stop_words=["елка", "Вода"]), analyzer=analyzer
    )
    found = terms(extractor.extract(documents, top_n=50))
    assert "ёлка" not in found
    assert "вода" not in found
    assert "горячий вода" not in found  # a stop word breaks the phrase
    assert {"двор", "школа", "горячий"} <= set(found)


def test_min_word_length(analyzer: MorphAnalyzer) -> None:
    documents = analyse(analyzer, ["Дом у реки, квартира в доме"])
    found = terms(KeywordExtractor(make_settings(min_word_length=5)).extract(documents))
    assert found == ["квартира"]


def test_lemma_sequences_as_documents() -> None:
    documents = [["горячий", "вода", "не", "быть"], ["Горячий", "вода"], ["горячий", "вода"]]
    keywords = extract_keywords(documents, top_n=5)
    assert [(k.term, k.count, k.phrase) for k in keywords] == [
        ("вода", 3, "вода"),
        ("горячий", 3, "горячий"),
        ("горячий вода", 3, "горячий вода"),  # no analyzer: no agreement
    ]
    with pytest.raises(TypeError, match="not a str"):
        extract_keywords(["горячая вода"])


def test_documents_are_streamed(analyzer: MorphAnalyzer, extractor: KeywordExtractor) -> None:
    consumed: list[str] = []

    def stream() -> Iterator[TextAnalysis]:
        for text in HOT_WATER:
            consumed.append(text)
            yield analyzer.analyze_text(text)

    streamed = extractor.extract(stream(), top_n=10)
    assert consumed == HOT_WATER
    assert streamed == extractor.extract(analyse(analyzer, HOT_WATER), top_n=10)


def test_one_comment_repeating_a_word_does_not_dominate(
    analyzer: MorphAnalyzer, extractor: KeywordExtractor
) -> None:
    texts = ["лифт " * 30] + ["сломался лифт"] + ["ржавая вода"] * 6
    background = extractor.corpus_stats(analyse(analyzer, ["Спасибо за лавочки в парке"]))
    keywords = extractor.extract(analyse(analyzer, texts), top_n=10, background=background)
    assert keywords[0].term == "вода"
    lift = next(k for k in keywords if k.term == "лифт")
    assert (lift.count, lift.documents) == (31, 2)


def test_corpus_stats_store_merge_prune(
    analyzer: MorphAnalyzer, extractor: KeywordExtractor
) -> None:
    first = extractor.corpus_stats(analyse(analyzer, OTHER_TOPICS[:6]))
    second = extractor.corpus_stats(analyse(analyzer, OTHER_TOPICS[6:]))
    whole = extractor.corpus_stats(analyse(analyzer, OTHER_TOPICS))
    first.merge(second)
    assert first == whole
    assert CorpusStats.from_dict(whole.to_dict()) == whole
    assert whole.document_frequencies["лифт"] == 2
    assert whole.idf("лифт") < whole.idf("никогда-не-было")
    whole.prune(2)
    assert set(whole.document_frequencies) == {"лифт", "двор", "вода"}
    assert whole.documents == len(OTHER_TOPICS)


def test_top_n_and_determinism(analyzer: MorphAnalyzer, extractor: KeywordExtractor) -> None:
    documents = analyse(analyzer, HOT_WATER)
    assert extractor.extract(documents, top_n=0) == []
    assert len(extractor.extract(documents, top_n=2)) == 2
    once = extractor.extract(documents, top_n=50)
    again = KeywordExtractor(make_settings(), analyzer=analyzer).extract(documents, top_n=50)
    assert once == again
    ones = [k.term for k in once if k.count == 1]
    assert ones == sorted(ones)  # ties break alphabetically


def test_a_tally_fed_page_by_page_ranks_as_one_extraction(
    analyzer: MorphAnalyzer, extractor: KeywordExtractor
) -> None:
    documents = analyse(analyzer, HOT_WATER + OTHER_TOPICS)
    background = extractor.corpus_stats(analyse(analyzer, OTHER_TOPICS[:4]))
    tally = extractor.new_tally()
    for start in range(0, len(documents), 3):  # pages, as the tasks read a community
        extractor.tally(documents[start : start + 3], into=tally)
    assert tally.documents == len(documents)
    assert tally.forgotten == 0
    for ranked_against in (None, background):
        expected = extractor.extract(documents, top_n=50, background=ranked_against)
        assert extractor.rank(tally, top_n=50, background=ranked_against) == expected
    split = extractor.corpus_stats(analyse(analyzer, OTHER_TOPICS[:2]))
    extractor.corpus_stats(analyse(analyzer, OTHER_TOPICS[2:4]), into=split)
    assert split == background


def test_a_tally_keeps_at_most_its_cap_of_terms_and_the_frequent_ones_exact() -> None:
    extractor = KeywordExtractor(make_settings(bigram_min_count=1))
    tally = TermTally(max_terms=40)
    unbounded = TermTally()
    documents = [["вода", "горячий", f"редкий{i}", f"штука{i}"] for i in range(200)]
    documents += [["вода", "вода", "лифт"]] * 5
    for document in documents:
        extractor.tally([document], into=tally)
        extractor.tally([document], into=unbounded)
        assert len(tally.counts) <= 40
        assert set(tally.document_counts) == set(tally.counts)
    assert tally.forgotten > 0 and unbounded.forgotten == 0
    assert len(unbounded.counts) > 600  # lemmas and phrases of the rare words
    for term in ("вода", "горячий", "вода горячий"):
        assert tally.counts[term] == unbounded.counts[term]
        assert tally.document_counts[term] == unbounded.document_counts[term]
    assert tally.repeats["вода"] == unbounded.repeats["вода"]
    top = [k.term for k in extractor.rank(tally, top_n=3)]
    assert top == [k.term for k in extractor.rank(unbounded, top_n=3)]
    assert top == ["вода", "вода горячий", "горячий"]  # 210, then 200 each (alphabetical)


def test_pruning_drops_tied_terms_together() -> None:
    tally = TermTally()
    tally.add(["а", "б", "в", "г", "г", "д", "д", "д"])
    tally.prune(2)  # "г" (2) and "д" (3) stay; the three seen once go, whatever their letters
    assert dict(tally.counts) == {"г": 2, "д": 3}
    assert tally.forgotten == 3
    tally.prune(1)
    assert dict(tally.counts) == {"д": 3}
    assert set(tally.repeats) == {"д"}
