"""Morphology benchmark: plain pymorphy3 against `src.morphology`, and keywords over many comments.

Run it from the repository root: `python -m bench.morphology`; `--help` lists the flags. It prints
a table: `case | items | seconds | per second | notes`.

The corpus is generated, deterministically (`--seed`): comment-like Russian text whose words are
drawn with a Zipf-like distribution over about 250 everyday lemmas (nouns, adjectives, verbs; up
to 12 forms each from pymorphy3's lexemes, commonest first) and over the Russian stop-word list
(function words, 40% of the words, as in real text), with sentence punctuation, `[id…|Имя]`
replies, `@names`, emoji, links, hashtags, numbers and a few Latin words, at rates close to VK
comments'. Two thousand comments make about 380 KB.

Cases:

* pymorphy3 `parse()` on every word: the words as the tokenizer finds them (lower-case), each
  `parse(word)[0]` with its `normal_form` and `tag.POS` read; no cache, no tokenisation timed;
* `analyze_text`, cold cache: a fresh analyzer, one pass (tokenising, misses parse);
* `analyze_text`, warm cache: the same pass again (every word a hit);
* `analyze_text` + counts: the same, reading `lemma_counts` and `pos_counts` (counted lazily);
* `tokenize` only, for scale;
* keywords over `--keyword-comments` comments: analysis and extraction streamed (no
  background); then a background (`corpus_stats`) of all of them, and the keywords of a tenth of
  them against it. Times include the analysis.
"""

# Russian vocabulary: Cyrillic letters that look like Latin ones are meant.

from __future__ import annotations

import argparse
import gc
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import accumulate, islice
from typing import Any, TypeVar

from src.morphology.analyzer import MorphAnalyzer, TextAnalysis, shared_pymorphy
from src.morphology.config import MorphologySettings
from src.morphology.keywords import KeywordExtractor, russian_stop_words
from src.morphology.tokenizer import tokenize

T = TypeVar("T")


def vocabulary(text: str) -> list[str]:
    return text.split()


NOUNS = vocabulary("""
вода свет дом двор подъезд лифт крыша подвал мусор контейнер дорога яма асфальт тротуар парковка
машина автобус маршрут остановка школа садик больница поликлиника врач очередь запись магазин
цена рубль деньги зарплата пенсия налог счёт квитанция тариф отопление батарея труба кран насос
авария ремонт работа компания управляющая администрация глава мэр депутат закон новость пост
комментарий вопрос ответ проблема решение жалоба заявление суд полиция сосед ребёнок мама семья
друг человек народ город район улица площадка парк дерево снег лёд зима лето весна осень погода
дождь ветер праздник концерт фестиваль спорт футбол матч команда игра фото видео группа сообщество
администратор модератор правило бан спам реклама объявление кошка собака животное приют помощь
волонтёр сбор благотворительность церковь храм музей библиотека театр кино интернет связь
телефон оператор сеть тариф сайт приложение канал газ электричество счётчик показание вход дверь
окно стена этаж квартира жилец собрание голосование выбор власть губернатор бюджет проект стройка
застройщик строительство участок земля лес река озеро пляж рыба охота дача огород урожай
""")
ADJECTIVES = vocabulary("""
горячий холодный новый старый большой маленький хороший плохой грязный чистый тёмный светлый
дорогой дешёвый быстрый медленный главный местный городской районный жилой детский школьный
общий частный бесплатный платный пустой полный громкий тихий красивый страшный опасный нужный
последний первый второй странный честный нормальный обычный тёплый зелёный белый чёрный
""")
VERBS = vocabulary("""
сделать делать починить чинить ждать прийти приехать уехать сказать говорить писать написать
звонить позвонить жаловаться пожаловаться отключить включить дать платить заплатить убрать
убирать вывезти вывозить строить построить закрыть открыть работать сломать сломаться течь
протекать знать понимать думать видеть смотреть посмотреть помочь помогать искать найти
потерять купить продать ответить отвечать решить решать хотеть мочь жить стоять ходить ехать
""")
NAMES = vocabulary("""
Иван Анна Сергей Ольга Дмитрий Мария Алексей Елена Андрей Наталья Павел Татьяна Михаил Ирина
""")
SURNAMES = vocabulary("Петров Иванова Смирнов Кузнецова Попов Соколова Лебедев Новикова")
EMOJI = ["😡", "😂", "👍", "🙏", "❤️", "🤬", "😭", "🔥", "👏", "🤦‍♂️", "😊", ")))"]
LATIN = ["ok", "wifi", "lol", "vk", "iphone", "wtf", "online", "pdf", "ok", "covid-19"]
LINKS = [
    "https://vk.com/wall-{a}_{b}",
    "vk.com/club{a}",
    "https://www.gosuslugi.ru/{b}",
    "youtu.be/x{a}",
    "www.mos.ru/news/{b}",
    "https://t.me/channel{a}",
]


@dataclass
class Row:
    case: str
    items: int
    unit: str
    seconds: float
    notes: str = ""

    @property
    def rate(self) -> float:
        return self.items / self.seconds if self.seconds else float("inf")


# The most frequent Russian function words, most frequent first; the rest of the stop-word list
# follows them in the Zipf ranking.
FREQUENT_FUNCTION_WORDS = vocabulary("""
и в не на я что с а как это по но к у же вы за бы из от о так мы то все он она они ты мне уже
только нет да вот если или ещё когда даже тоже там тут сейчас потом его их ну для до ли вам вас
""")
# Which forms of a lemma occur: the lemma's own part of speech (no participles, gerunds, short
# or comparative forms, whose lemma is another word's), at most this many, commonest first.
FORMS_PER_LEMMA = 12
FORM_KINDS = {"NOUN": {"NOUN"}, "ADJF": {"ADJF"}, "INFN": {"INFN", "VERB"}}


def zipf(count: int, exponent: float) -> list[float]:
    return [1 / (rank + 1) ** exponent for rank in range(count)]


def weighted_forms(
    lemmas: Sequence[tuple[str, float]], part_of_speech: str
) -> list[tuple[str, float]]:
    """Each lemma's forms from pymorphy3's lexeme, sharing the lemma's weight Zipf-wise."""
    morph: Any = shared_pymorphy()  # `lexeme` is outside the package's typed subset
    kinds = FORM_KINDS[part_of_speech]
    weighted: list[tuple[str, float]] = []
    for lemma, weight in lemmas:
        parse = next((p for p in morph.parse(lemma) if part_of_speech == p.tag.POS), None)
        lexeme = (
            [lemma]
            if parse is None
            else [p.word for p in parse.lexeme if p.tag.POS in kinds and "Supr" not in p.tag]
        )
        forms = list(dict.fromkeys(lexeme))[:FORMS_PER_LEMMA]
        shares = zipf(len(forms), 1.0)
        total = sum(shares)
        weighted.extend(
            (form, weight * share / total) for form, share in zip(forms, shares, strict=True)
        )
    return weighted


class CommentGenerator:
    """Comment-like Russian text from a Zipf-distributed vocabulary; deterministic per seed."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        rng = self.rng
        lemmas = [(lemma, "NOUN") for lemma in NOUNS]
        lemmas += [(lemma, "ADJF") for lemma in ADJECTIVES]
        lemmas += [(lemma, "INFN") for lemma in VERBS]
        rng.shuffle(lemmas)
        lemma_weights = zipf(len(lemmas), 1.0)
        forms: dict[str, float] = {}
        for part_of_speech in FORM_KINDS:
            chosen = [
                (lemma, weight)
                for (lemma, pos), weight in zip(lemmas, lemma_weights, strict=True)
                if pos == part_of_speech
            ]
            for form, weight in weighted_forms(chosen, part_of_speech):
                forms[form] = forms.get(form, 0.0) + weight
        ranked = sorted(forms.items(), key=lambda item: (-item[1], item[0]))
        self.content = [form for form, _ in ranked]
        self.content_weights = list(accumulate(weight for _, weight in ranked))
        rest = sorted(russian_stop_words() - set(FREQUENT_FUNCTION_WORDS))
        rng.shuffle(rest)
        self.function = FREQUENT_FUNCTION_WORDS + rest
        self.function_weights = list(accumulate(zipf(len(self.function), 1.0)))

    def words(self, count: int) -> list[str]:
        rng = self.rng
        n_function = sum(1 for _ in range(count) if rng.random() < 0.4)
        picked = rng.choices(self.content, cum_weights=self.content_weights, k=count - n_function)
        picked += rng.choices(self.function, cum_weights=self.function_weights, k=n_function)
        rng.shuffle(picked)
        return picked

    def comment(self) -> str:
        rng = self.rng
        parts: list[str] = []
        if rng.random() < 0.15:
            name = rng.choice(NAMES)
            if rng.random() < 0.3:
                name += " " + rng.choice(SURNAMES)
            parts.append(f"[id{rng.randint(1, 900_000_000)}|{name}],")
        elif rng.random() < 0.03:
            parts.append(f"@id{rng.randint(1, 9_000_000)}")
        length = max(1, min(80, int(rng.lognormvariate(2.6, 0.7))))
        words = self.words(length)
        sentence_start = True
        for index, word in enumerate(words):
            roll = rng.random()
            if roll < 0.01:
                word = rng.choice(LATIN)
            elif roll < 0.03:
                word = str(rng.randint(1, 5000))
            if sentence_start:
                word = word[:1].upper() + word[1:]
                sentence_start = False
            parts.append(word)
            if index < len(words) - 1:
                punctuation = rng.random()
                if punctuation < 0.08:
                    parts[-1] += ","
                elif punctuation < 0.14:
                    parts[-1] += rng.choice([".", "!", "?", "...", "!!!"])
                    sentence_start = True
        parts[-1] += rng.choice(["", ".", "!", "?", "!!!", "..."])
        if rng.random() < 0.05:
            link = rng.choice(LINKS).format(a=rng.randint(1, 99999), b=rng.randint(1, 99999))
            parts.insert(rng.randint(0, len(parts)), link)
        if rng.random() < 0.03:
            parts.append("#" + rng.choice(self.content))
        if rng.random() < 0.2:
            parts.append("".join(rng.choice(EMOJI) for _ in range(rng.randint(1, 3))))
        return " ".join(parts)

    def comments(self, count: int) -> list[str]:
        return [self.comment() for _ in range(count)]


def measure(function: Callable[[], T]) -> tuple[T, float]:
    """The function's result and the seconds it took (after a full collection)."""
    gc.collect()
    started = time.perf_counter()
    result = function()
    return result, time.perf_counter() - started


def best_of(repeat: int, function: Callable[[], object]) -> float:
    return min(measure(function)[1] for _ in range(repeat))


def run(args: argparse.Namespace) -> tuple[list[Row], list[str]]:
    settings = MorphologySettings.model_construct()
    generator = CommentGenerator(args.seed)
    corpus = generator.comments(args.comments)
    corpus_kb = sum(len(text.encode()) for text in corpus) / 1024
    words = [word for text in corpus for word in tokenize(text).words]
    morph = shared_pymorphy()
    rows: list[Row] = []

    def plain() -> None:
        for word in words:
            best = morph.parse(word)[0]
            best.normal_form, best.tag.POS  # noqa: B018 (read what the module reads)

    rows.append(
        Row("pymorphy3 parse() per word", len(words), "words", best_of(1, plain), "no cache")
    )

    analyzer = MorphAnalyzer(settings)

    def analyze_pass() -> None:
        for text in corpus:
            analyzer.analyze_text(text, allow_empty=True)

    _, cold = measure(analyze_pass)
    stats = analyzer.cache_stats()
    cold_notes = f"hit rate {stats.hit_rate:.1%}, {stats.size:,} cache entries"
    rows.append(Row("analyze_text, cold cache", len(words), "words", cold, cold_notes))
    warm = best_of(args.repeat, analyze_pass)
    rows.append(Row("analyze_text, warm cache", len(words), "words", warm, "every word a hit"))

    def counted_pass() -> None:
        for text in corpus:
            analysis = analyzer.analyze_text(text, allow_empty=True)
            analysis.lemma_counts, analysis.pos_counts  # noqa: B018 (counted on first access)

    counted = best_of(args.repeat, counted_pass)
    counted_notes = "warm, lemma_counts and pos_counts read"
    rows.append(Row("analyze_text + counts", len(words), "words", counted, counted_notes))

    def tokenize_pass() -> None:
        for text in corpus:
            tokenize(text)

    rows.append(Row("tokenize only", len(words), "words", best_of(args.repeat, tokenize_pass)))

    many = generator.comments(args.keyword_comments)
    n = len(many)
    extractor = KeywordExtractor(settings, analyzer=analyzer)

    def analysed(texts: Sequence[str]) -> Iterator[TextAnalysis]:
        for text in texts:
            yield analyzer.analyze_text(text, allow_empty=True)

    def analyze_many() -> None:
        for _ in analysed(many):
            pass

    _, analysis_seconds = measure(analyze_many)
    rows.append(Row(f"analyze_text x {n:,} comments", n, "comments", analysis_seconds))
    keywords, seconds = measure(lambda: extractor.extract(analysed(many), top_n=20))
    notes = f"analysis included; extraction alone ~{seconds - analysis_seconds:.1f} s"
    rows.append(Row(f"keywords of {n:,} comments", n, "comments", seconds, notes))
    background, seconds = measure(lambda: extractor.corpus_stats(analysed(many)))
    terms = len(background.document_frequencies)
    rows.append(
        Row(f"background of {n:,} comments", n, "comments", seconds, f"{terms:,} terms counted")
    )
    target = list(islice(many, 0, None, 10))
    _, seconds = measure(
        lambda: extractor.extract(analysed(target), top_n=20, background=background)
    )
    rows.append(Row(f"keywords of {len(target):,} vs background", len(target), "comments", seconds))
    summary = [
        f"words/s corpus: {len(corpus):,} comments, {corpus_kb:,.0f} KB, {len(words):,} words "
        f"({len(set(words)):,} distinct)",
        f"keywords of the {n:,}: " + ", ".join(keyword.phrase for keyword in keywords[:10]),
    ]
    return rows, summary


def format_table(rows: list[Row]) -> str:
    header = ("case", "items", "seconds", "per second", "notes")
    lines = [
        (
            row.case,
            f"{row.items:,} {row.unit}",
            f"{row.seconds:.3f}",
            f"{row.rate:,.0f} {row.unit}/s",
            row.notes,
        )
        for row in rows
    ]
    widths = [max(len(str(cells[i])) for cells in [header, *lines]) for i in range(len(header))]
    out = []
    for cells in [header, *lines]:
        out.append(
            " | ".join(
                str(cell).ljust(width) for cell, width in zip(cells, widths, strict=True)
            ).rstrip()
        )
        if cells is header:
            out.append("-+-".join("-" * width for width in widths))
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--comments", type=int, default=2000, help="comments in the words/s corpus")
    parser.add_argument(
        "--keyword-comments", type=int, default=100_000, help="comments for the keyword cases"
    )
    parser.add_argument("--repeat", type=int, default=9, help="warm runs; the best one counts")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    rows, notes = run(args)
    print(format_table(rows))
    print("\n".join(notes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
