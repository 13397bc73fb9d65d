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


def estimate_tokens(texts: list[str]) -> int:
    """Tokens a BERT-family model will read for `texts`, estimated without its tokenizer."""
    findall = _PIECES.findall
    return sum(min(len(findall(t)) + SPECIAL_TOKENS, MAX_TOKENS_PER_TEXT) for t in texts)
