"""The token estimate charged to a key's tokens/min limit before the model runs.

BERT-family tokenizers (WordPiece, and the tfidf-linear export's stand-in) split text on
whitespace and punctuation, give every CJK ideograph and every punctuation mark a token of
its own, and split a word the vocabulary lacks into pieces. So the estimate counts: one token
per CJK character, one per punctuation or symbol character, one per six letters or digits of
a word, and [CLS] + [SEP]. Measured against real tokenizers (tests/services/test_tokens.py):
MiniLM-L6's 30k vocabulary within 10% on English, Chinese, punctuation-heavy and mixed text;
the old "4 characters a token" was 3-4x low on Chinese and punctuation. A text never counts
more than MAX_TOKENS_PER_TEXT: BERT-family models truncate there. After the model runs, the
service charges the difference to the real count (or refunds it).

Most texts are ASCII, and most of those plain words: they take a shorter road to exactly the same
count (tests/services/test_tokens.py compares the roads on generated texts). Words of letters and
digits between spaces: a split, one token per six characters of each. Other ASCII: the same
pieces matched with ASCII character sets, which skip the Unicode class look-ups. Measured with
bench/callgrind_ab.py: ~9,000 fewer instructions for a 40-character sentence (of ~20,000).
"""

from __future__ import annotations

import re

MAX_TOKENS_PER_TEXT = 512  # positions of a BERT-family encoder: no text is read past them
SPECIAL_TOKENS = 2  # [CLS] and [SEP]
WORD_PIECE_CHARS = 6  # letters/digits per token in a word (MiniLM: +8% on the demo set, -4% on prose)

# CJK ideographs, kana and CJK punctuation, fullwidth forms: one token each.
_CJK = "\u2e80-\u9fff\uf900-\ufaff\ufe30-\ufe4f\uff00-\uffef\U00020000-\U0002fa1f"
# One match per token: a CJK character, up to six word characters of a run, or one symbol.
_PIECES = re.compile(rf"[{_CJK}]|[^\W_{_CJK}]{{1,{WORD_PIECE_CHARS}}}|[^\w\s]|_")
# The same pieces of an ASCII text: `\s` there is str.isspace()'s \t-\r, \x1c-\x1f and space.
_ASCII_PIECES = re.compile(rf"[0-9A-Za-z]{{1,{WORD_PIECE_CHARS}}}|[^0-9A-Za-z\t-\r\x1c-\x20]")


def _pieces(text: str) -> int:
    if text.isascii():
        words = text.split()
        if "".join(words).isalnum():  # ASCII letters and digits between spaces, nothing else
            return sum((len(w) + WORD_PIECE_CHARS - 1) // WORD_PIECE_CHARS for w in words)
        return len(_ASCII_PIECES.findall(text))
    return len(_PIECES.findall(text))


def estimate_tokens(texts: list[str]) -> int:
    """Tokens a BERT-family model will read for `texts`, estimated without its tokenizer."""
    return sum(min(_pieces(t) + SPECIAL_TOKENS, MAX_TOKENS_PER_TEXT) for t in texts)
