"""The `tfidf-linear` family: word and character n-gram TF-IDF with a linear model.

Trains in seconds on a CPU, in any language (character n-grams need no word
segmentation, so Chinese works), for the three tasks: single-label (logistic
regression), multi-label (one logistic regression per label, thresholds tuned on
validation) and regression (ridge). The regularisation strength is picked on the
validation set by the engine's own selection metric (`metrics.SELECTION`).

Why the features are defined over token ids rather than over strings: the model is
served by the same ONNX Runtime path as the transformers (`aiaas.serving.runtime`),
which tokenizes with a `tokenizers` tokenizer.json and feeds `input_ids`. So the
tokenizer here is a character-level one (normalise: NFKC, lowercase, collapse
whitespace; punctuation becomes its own word; every word is framed by the boundary
token "▁"), and both n-gram blocks are counted over its ids:

    "Not good." -> ▁ n o t ▁ g o o d ▁ . ▁
    character n-grams (1..5): every run of 1..5 consecutive ids, boundaries included;
    word n-grams (1..2): "▁not▁", "▁not▁good▁", ... (a word is the ids between two ▁).

Training and serving therefore run the very same tokenizer with the same truncation
(`MAX_CHARS`), and the ONNX graph (`aiaas.registry.export.classical`) counts the
same n-grams with ONNX's TfIdfVectorizer op. Each block is `(1 + log tf) * idf`,
L2-normalised on its own; the linear model sees both blocks side by side.

The model directory holds aiaas.json, tokenizer.json and `tfidf_linear.npz` (plain
arrays, loaded with allow_pickle=False: no pickles anywhere).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aiaas.core.errors import InvalidFile
from aiaas.training import metrics

logger = logging.getLogger(__name__)

FAMILY = "tfidf-linear"
FORMAT_VERSION = 1
META_FILE = "aiaas.json"
TOKENIZER_FILE = "tokenizer.json"
MODEL_FILE = "tfidf_linear.npz"

PAD, UNK, BOUNDARY = "[PAD]", "[UNK]", "\u2581"
PAD_ID, UNK_ID, BOUNDARY_ID = 0, 1, 2
# Characters the tokenizer keeps per text (the runtime truncates to the same number).
MAX_CHARS = 2048
# Distinct characters in the vocabulary; the rest become [UNK] (CJK needs a few thousand).
MAX_VOCAB_CHARS = 20_000
CHAR_NGRAMS = (1, 5)
WORD_NGRAMS = (1, 2)
# Word n-grams longer than this many ids (boundaries included) are dropped: they are
# rare (URLs, hashes) and each extra id deepens the n-gram search at serving time.
MAX_WORD_GRAM_IDS = 40
MIN_DF = 2  # an n-gram seen in one training text only says nothing about the next one
MAX_FEATURES = {"char": 300_000, "word": 200_000}
# Inverse regularisation strength tried for logistic regression (higher = fit harder),
# and ridge alphas; the validation set picks one. Measured with 5-fold CV on the
# bench/quality sets: best C 4 (English sentences), 4-16 (Chinese reviews), 1-2 (tweets).
C_GRID = (1.0, 4.0, 16.0)
ALPHA_GRID = (0.3, 1.0, 3.0)
NO_VALIDATION_C, NO_VALIDATION_ALPHA = 4.0, 1.0
# Bias for a class the training set never shows: its probability is ~e^-30.
ABSENT_BIAS = -30.0

# Texts per tokenizers.encode_batch call (see `encode`).
ENCODE_CHUNK = 2048

# Ids are mapped to private-use code points so that scikit-learn's fast string
# n-gram counting can run on them; the boundary maps to a space (the word separator).
_PUA_PLANES = (0xF0000, 0x100000)
_PUA_SIZE = 65534


# -- tokenizer ------------------------------------------------------------------------------
def build_tokenizer(texts: Sequence[str], *, max_chars: int = MAX_CHARS) -> Any:
    """A character tokenizer whose vocabulary is the training texts' characters."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors

    normalizer = normalizers.Sequence(
        [
            normalizers.NFKC(),
            normalizers.Lowercase(),
            normalizers.Replace(BOUNDARY, " "),  # a literal ▁ in the text is just a space
            normalizers.Replace(Regex(r"\s+"), " "),
            normalizers.Strip(),
        ]
    )
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(normalizer.normalize_str(text))
    counts.pop(" ", None)
    counts.pop(BOUNDARY, None)
    vocab = {PAD: PAD_ID, UNK: UNK_ID, BOUNDARY: BOUNDARY_ID}
    # Most frequent first, ties by code point: the same texts always give the same ids.
    for char, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_VOCAB_CHARS]:
        vocab[char] = len(vocab)
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK, fuse_unk=False))
    tokenizer.normalizer = normalizer
    # Split on whitespace first, then punctuation, then frame each piece: no piece is empty,
    # so two boundaries never follow each other (the n-gram layout relies on that).
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Punctuation("isolated"),
            pre_tokenizers.Metaspace(replacement=BOUNDARY, prepend_scheme="always", split=True),
        ]
    )
    # The closing boundary, so the last word is framed like every other one.
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"$A {BOUNDARY}", special_tokens=[(BOUNDARY, BOUNDARY_ID)]
    )
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_chars)
    return tokenizer


def encode(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """Ids per text, encoded ENCODE_CHUNK texts at a time: a tokenizers Encoding holds tokens,
    offsets and masks besides the ids (100k sentences at once held ~2 GB until the last was read)."""
    out: list[list[int]] = []
    for start in range(0, len(texts), ENCODE_CHUNK):
        out.extend(e.ids for e in tokenizer.encode_batch(list(texts[start : start + ENCODE_CHUNK])))
    return out


@dataclass
class Encoded:
    """Training texts as character ids, once: what the runner's token statistics and the
    featurisation both need (`encode_training`)."""

    texts: list[str]
    tokenizer: Any
    ids: list[list[int]]  # truncated to MAX_CHARS as the tokenizer and the runtime truncate
    lengths: list[int]  # ids per text before that truncation

    def matches(self, texts: Sequence[str]) -> bool:
        """True when these are the texts it was computed from (same order)."""
        return len(texts) == len(self.texts) and all(a == b for a, b in zip(texts, self.texts, strict=True))


def encode_training(texts: Sequence[str], *, max_chars: int = MAX_CHARS) -> Encoded:
    """Tokenizer built on `texts` and their ids, from one encoding pass: each text is encoded
    without truncation (so its length before truncation is known: the data report's truncated_rows)
    and then truncated as the tokenizer's own truncation does it (the first max_chars - 1 ids and the
    closing boundary)."""
    texts = list(texts)
    tokenizer = build_tokenizer(texts, max_chars=max_chars)
    tokenizer.no_truncation()
    ids = encode(tokenizer, texts)
    tokenizer.enable_truncation(max_length=max_chars)
    lengths = [len(row) for row in ids]
    for i, n in enumerate(lengths):
        if n > max_chars:
            ids[i] = [*ids[i][: max_chars - 1], BOUNDARY_ID]
    return Encoded(texts, tokenizer, ids, lengths)


def prepared_encoding(data: Any, texts: list[str]) -> Encoded | None:
    """The training texts' encoding the job's data step made for its token statistics
    (`data.encodings[FAMILY]`, aiaas.jobs.token_stats), when it is of exactly these texts: encoding is
    ~20% of a 100k-row job's CPU, and is done once."""
    encoded = (getattr(data, "encodings", None) or {}).get(FAMILY)
    return encoded if isinstance(encoded, Encoded) and encoded.matches(texts) else None


def _id_table(vocab_size: int) -> list[str]:
    table = [chr(_PUA_PLANES[i // _PUA_SIZE] + i % _PUA_SIZE) for i in range(vocab_size)]
    table[BOUNDARY_ID] = " "
    return table


def _as_strings(ids: Sequence[Sequence[int]], table: list[str]) -> list[str]:
    return ["".join([table[i] for i in row]) for row in ids]


def _gram_ids(gram: str, block: str, inverse: dict[str, int]) -> list[int]:
    """The id sequence the ONNX graph must find for one vocabulary entry."""
    ids = [inverse[ch] for ch in gram]
    return [BOUNDARY_ID, *ids, BOUNDARY_ID] if block == "word" else ids


# -- features -------------------------------------------------------------------------------
@dataclass
class Block:
    """One n-gram block: its vocabulary (as id sequences, in column order) and idf."""

    name: str  # "char" | "word"
    grams: list[tuple[int, ...]]
    idf: np.ndarray  # float32 [F]

    def __len__(self) -> int:
        return len(self.grams)


class NgramFeaturizer:
    """Token ids -> sparse TF-IDF rows: [char block | word block], each L2-normalised."""

    def __init__(self, blocks: list[Block], vocab_size: int) -> None:
        from sklearn.feature_extraction.text import CountVectorizer

        self.blocks = blocks
        self.vocab_size = vocab_size
        self._table = _id_table(vocab_size)
        self._vectorizers = []
        for block in blocks:
            if block.name == "char":
                keys = ["".join(self._table[i] for i in gram) for gram in block.grams]
            else:  # word grams are stored framed by boundaries; the analyzer joins words by " "
                keys = ["".join(self._table[i] for i in gram[1:-1]) for gram in block.grams]
            vocabulary = {key: col for col, key in enumerate(keys)}
            self._vectorizers.append(
                CountVectorizer(vocabulary=vocabulary, dtype=np.float32, **_analyzer(block.name))
            )

    @property
    def n_features(self) -> int:
        return sum(len(b) for b in self.blocks)

    @classmethod
    def fit(cls, ids: Sequence[Sequence[int]], vocab_size: int) -> tuple[NgramFeaturizer, Any]:
        """Learn vocabularies and idf from training ids; returns the featurizer and X_train."""
        from sklearn.feature_extraction.text import CountVectorizer

        table = _id_table(vocab_size)
        inverse = {ch: i for i, ch in enumerate(table)}
        docs = _as_strings(ids, table)
        blocks, parts = [], []
        for name in ("char", "word"):
            vectorizer = CountVectorizer(
                min_df=min(MIN_DF, len(docs)),
                max_features=MAX_FEATURES[name],
                dtype=np.float32,
                **_analyzer(name),
            )
            try:
                counts = vectorizer.fit_transform(docs)
            except ValueError:  # no n-gram reaches min_df (tiny data): the block stays empty
                continue
            keys = vectorizer.get_feature_names_out()
            grams = [tuple(_gram_ids(key, name, inverse)) for key in keys]
            keep = np.array(
                [len(g) <= (MAX_WORD_GRAM_IDS if name == "word" else CHAR_NGRAMS[1]) for g in grams]
            )
            if not keep.all():  # column selection copies the matrix: only when a gram is dropped
                counts = counts[:, np.flatnonzero(keep)].tocsr()
                grams = [g for g, k in zip(grams, keep, strict=True) if k]
            counts.sum_duplicates()
            df = np.bincount(counts.indices, minlength=counts.shape[1])  # rows per column, no CSC copy
            # scikit-learn's smooth idf: ln((1 + n) / (1 + df)) + 1.
            idf = (np.log((1.0 + len(docs)) / (1.0 + df)) + 1.0).astype(np.float32)
            blocks.append(Block(name, grams, idf))
            parts.append(counts)
        featurizer = cls(blocks, vocab_size)
        return featurizer, featurizer._weigh(parts, len(docs))

    def transform(self, ids: Sequence[Sequence[int]]) -> Any:
        docs = _as_strings(ids, self._table)
        return self._weigh([v.transform(docs) for v in self._vectorizers], len(docs))

    def _weigh(self, counts: list[Any], n_rows: int) -> Any:
        """(1 + log tf) * idf, L2-normalised per block, blocks side by side."""
        import scipy.sparse as sp

        parts = []
        for block, x in zip(self.blocks, counts, strict=True):
            # In place on the counts' own float32 arrays: the matrix exists once per block (the
            # expression form, x @ diags(idf) and diags(1 / norm) @ x, made three more copies).
            x = sp.csr_matrix(x, dtype=np.float32)
            x.sum_duplicates()
            x.data = np.log(x.data, out=x.data)
            x.data += 1.0
            x.data *= block.idf[x.indices]
            rows = np.repeat(np.arange(x.shape[0]), np.diff(x.indptr))
            norms = np.sqrt(np.bincount(rows, weights=x.data * x.data, minlength=x.shape[0]))
            x.data *= (1.0 / np.maximum(norms, 1e-12)).astype(np.float32)[rows]
            parts.append(x)
        if not parts:
            return sp.csr_matrix((n_rows, 0), dtype=np.float32)
        if len(parts) == 1:
            return parts[0]
        return sp.hstack(parts, format="csr", dtype=np.float32)

    # -- (de)serialisation as plain arrays --
    def to_arrays(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {"vocab_size": np.array(self.vocab_size, dtype=np.int64)}
        for block in self.blocks:
            out[f"{block.name}_pool"] = np.array([i for g in block.grams for i in g], dtype=np.int64)
            out[f"{block.name}_lengths"] = np.array([len(g) for g in block.grams], dtype=np.int32)
            out[f"{block.name}_idf"] = block.idf
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> NgramFeaturizer:
        blocks = []
        for name in ("char", "word"):
            if f"{name}_pool" not in arrays:
                continue
            pool, lengths = arrays[f"{name}_pool"], arrays[f"{name}_lengths"]
            starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
            grams = [tuple(pool[s : s + n].tolist()) for s, n in zip(starts, lengths, strict=True)]
            blocks.append(Block(name, grams, arrays[f"{name}_idf"].astype(np.float32)))
        return cls(blocks, int(arrays["vocab_size"]))


def select_columns(x: Any, columns: np.ndarray) -> Any:
    """x's `columns`; x itself when they are all of its columns in order (slicing a CSR matrix
    copies it, and at 100k rows the matrix is hundreds of MB)."""
    if len(columns) == x.shape[1] and np.array_equal(columns, np.arange(x.shape[1])):
        return x
    return x[:, columns]


def _analyzer(name: str) -> dict[str, Any]:
    common = {"lowercase": False, "strip_accents": None}  # the tokenizer already normalised
    if name == "char":
        return {"analyzer": "char", "ngram_range": CHAR_NGRAMS, **common}
    return {"analyzer": "word", "token_pattern": r"[^ ]+", "ngram_range": WORD_NGRAMS, **common}


# -- linear heads ---------------------------------------------------------------------------
@dataclass
class LinearHead:
    """logits = X @ weights + bias; the runtime applies softmax / sigmoid / nothing."""

    weights: np.ndarray  # float32 [F, K]
    bias: np.ndarray  # float32 [K]

    def logits(self, x: Any) -> np.ndarray:
        return np.asarray(x @ self.weights, dtype=np.float32) + self.bias


def fit_head(
    task: str, x: Any, y: np.ndarray, n_out: int, strength: float, *, balanced: bool, seed: int
) -> LinearHead:
    """One fit: logistic regression (softmax over classes, or one per label) or ridge."""
    from sklearn.linear_model import LogisticRegression, Ridge

    n_features = x.shape[1]
    weights = np.zeros((n_features, n_out), dtype=np.float32)
    bias = np.zeros(n_out, dtype=np.float32)
    if task == "regression":
        model = Ridge(alpha=strength, random_state=seed).fit(x, y)
        weights[:, 0], bias[0] = model.coef_, model.intercept_
        return LinearHead(weights, bias)
    cw = "balanced" if balanced else None
    if task == "multi_label_classification":
        for j in range(n_out):
            column = y[:, j] > 0.5
            if column.all() or not column.any():  # one value only: nothing to fit
                bias[j] = -ABSENT_BIAS if column.all() else ABSENT_BIAS
                continue
            model = LogisticRegression(C=strength, max_iter=2000, class_weight=cw, random_state=seed)
            model.fit(x, column.astype(np.int64))
            weights[:, j], bias[j] = model.coef_[0], model.intercept_[0]
        return LinearHead(weights, bias)
    present = np.unique(y)
    bias[:] = ABSENT_BIAS
    if len(present) == 1:  # a training set of one class predicts that class
        bias[present[0]] = 0.0
        return LinearHead(weights, bias)
    model = LogisticRegression(C=strength, max_iter=2000, class_weight=cw, random_state=seed).fit(x, y)
    if len(present) == 2:  # binary: one score z, i.e. logits (0, z) give the same softmax
        bias[present[0]] = 0.0
        weights[:, present[1]], bias[present[1]] = model.coef_[0], model.intercept_[0]
    else:
        for row, cls in enumerate(model.classes_):
            weights[:, cls], bias[cls] = model.coef_[row], model.intercept_[row]
    return LinearHead(weights, bias)


def outputs(task: str, logits: np.ndarray) -> np.ndarray:
    """What the runtime serves for these logits: the same functions aiaas.serving.runtime applies."""
    from aiaas.serving.runtime import sigmoid, softmax

    if task == "single_label_classification":
        return softmax(logits)
    if task == "multi_label_classification":
        return sigmoid(logits)
    return logits


def score(task: str, logits: np.ndarray, y: np.ndarray, labels: list[str]) -> dict[str, Any]:
    """The transformer engine's validation metrics, plus its valid_loss, for these logits."""
    if task == "single_label_classification":
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        loss = float(-log_probs[np.arange(len(y)), y].mean())
        return {"valid_loss": loss, **metrics.single_label(logits, y, labels)}
    if task == "multi_label_classification":
        # Binary cross-entropy with logits, in its overflow-free form.
        loss = float((np.maximum(logits, 0) - logits * y + np.logaddexp(0.0, -np.abs(logits))).mean())
        return {"valid_loss": loss, **metrics.multi_label(outputs(task, logits), y, labels)}
    pred = logits[:, 0]
    return {"valid_loss": float(((pred - y) ** 2).mean()), **metrics.regression(pred, y)}


# -- the trained model ----------------------------------------------------------------------
class ClassicalModel:
    """A trained tfidf-linear model in memory: tokenizer, featurizer, head.

    Its `predict` is the plain scikit-learn/scipy predictor: the reference the ONNX
    export is checked against, and what the export's latency is compared with.
    """

    def __init__(self, *, tokenizer: Any, featurizer: NgramFeaturizer, head: LinearHead, meta: dict) -> None:
        self.tokenizer = tokenizer
        self.featurizer = featurizer
        self.head = head
        self.meta = meta
        self.task: str = meta["task"]
        self.labels: list[str] = list(meta.get("labels") or [])

    def logits(self, texts: list[str]) -> np.ndarray:
        return self.head.logits(self.featurizer.transform(encode(self.tokenizer, texts)))

    def predict(self, texts: list[str]) -> np.ndarray:
        """[N, C] probabilities (softmax / sigmoid), or [N, 1] values for regression."""
        return outputs(self.task, self.logits(texts))

    def save(self, model_dir: Path) -> Path:
        """Write the directory next to its final place, then swap it in (no half-written model)."""
        model_dir = Path(model_dir)
        tmp = model_dir.with_name(f".tmp-{model_dir.name}-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        self.tokenizer.save(str(tmp / TOKENIZER_FILE))
        arrays = {**self.featurizer.to_arrays(), "weights": self.head.weights, "bias": self.head.bias}
        np.savez(tmp / MODEL_FILE, **arrays)
        (tmp / META_FILE).write_text(json.dumps({"format_version": FORMAT_VERSION, **self.meta}, indent=2))
        if model_dir.exists():
            shutil.rmtree(model_dir)
        os.rename(tmp, model_dir)
        return model_dir

    @classmethod
    def load(cls, model_dir: Path) -> ClassicalModel:
        from tokenizers import Tokenizer

        model_dir = Path(model_dir)
        try:
            meta = json.loads((model_dir / META_FILE).read_text())
            with np.load(model_dir / MODEL_FILE, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except (OSError, ValueError) as exc:
            raise InvalidFile(f"{model_dir} is not a readable {FAMILY} model: {exc}") from exc
        if meta.get("family") != FAMILY:
            raise InvalidFile(f"{model_dir}/{META_FILE} says family {meta.get('family')!r}, not {FAMILY!r}.")
        tokenizer = Tokenizer.from_file(str(model_dir / TOKENIZER_FILE))
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=int(meta["max_length"]))
        head = LinearHead(arrays["weights"].astype(np.float32), arrays["bias"].astype(np.float32))
        return cls(tokenizer=tokenizer, featurizer=NgramFeaturizer.from_arrays(arrays), head=head, meta=meta)


def is_classical(model_dir: Path) -> bool:
    """True when `model_dir/aiaas.json` names this family (the exporter dispatches on it)."""
    try:
        return json.loads((Path(model_dir) / META_FILE).read_text()).get("family") == FAMILY
    except (OSError, ValueError, AttributeError):
        return False
