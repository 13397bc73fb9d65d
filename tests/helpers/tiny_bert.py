"""Build a tiny BERT (random weights, WordPiece vocab trained on a few strings) offline.

Steps take milliseconds; used by training, serving and end-to-end tests.
"""

from __future__ import annotations

import json
from pathlib import Path

CORPUS = [
    "my card was charged twice please refund",
    "i want my money back for this order",
    "the app crashes when i open settings",
    "login fails with an error message",
    "how do i change my delivery address",
    "where is my package it is late",
    "great service thank you very much",
    "the product is excellent and works well",
    "terrible experience never again",
    "cancel my subscription today",
]


def build_tiny_bert(out_dir: Path, *, num_labels: int = 2, extra_texts: list[str] | None = None) -> Path:
    """Write an HF model directory (config, safetensors weights, tokenizer) and return it."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=400, special_tokens=special)
    tok.train_from_iterator(CORPUS + list(extra_texts or []), trainer=trainer)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=128,
        do_lower_case=True,
    )
    fast.save_pretrained(out_dir)

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=num_labels,
    )
    model = BertForSequenceClassification(config)
    model.save_pretrained(out_dir, safe_serialization=True)
    (out_dir / "aiaas_test_model.json").write_text(json.dumps({"built_by": "tests.helpers.tiny_bert"}))
    return out_dir
