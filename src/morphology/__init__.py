"""Text analysis of comments: tokens, lemmas and parts of speech (pymorphy3), keywords.

Pure domain code (no HTTP, queue or database). CPU-bound: run it in the worker, never on the
API's event loop. `tokenizer` splits VK text; `analyzer.MorphAnalyzer` (one per worker process,
from `create_analyzer` at start-up) lemmatises with a bounded cache; `keywords` ranks content
lemmas and phrases against a background; `config.MorphologySettings` (`MORPHOLOGY_*`).
"""
