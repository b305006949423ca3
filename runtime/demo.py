"""A tiny, offline stand-in for the challenge's FineWeb data.

The text is Python's own documentation topics (`pydoc_data.topics`, ~466 KB of
English shipped with every CPython), so nothing is downloaded. We train a
SentencePiece BPE tokenizer on the train documents and write shards with the
challenge's file names, so the same globs and code paths work on demo and real
data. Every document is preceded by the BOS token, as in the challenge's shards.

The build is deterministic (sorted documents, one trainer thread, no input
sampling or shuffling), idempotent (a manifest of the parameters marks a
finished build) and atomic (files are built in a temporary directory and moved
into place with os.replace, the manifest last).
"""
from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from runtime.data import ShardError, read_header, write_shard

TOKENIZER_NAME = "tokenizer.model"
TRAIN_NAME = "fineweb_train_000000.bin"
VAL_NAME = "fineweb_val_000000.bin"
MANIFEST_NAME = "demo_manifest.json"
DOC_MIN_CHARS = 2000
BUILD_VERSION = 1  # bump when the recipe changes so old builds are rebuilt

# SentencePiece's default special ids (<unk>=0, <s>=1, </s>=2, no pad); every
# document in a shard starts with BOS. Not checked against the real challenge tokenizers.
UNK_ID, BOS_ID, EOS_ID = 0, 1, 2


@dataclass(frozen=True)
class DemoData:
    out_dir: Path
    tokenizer_path: Path
    train_path: Path
    val_path: Path
    train_tokens: int
    val_tokens: int
    vocab_size: int

    @property
    def train_pattern(self) -> str:
        return str(self.out_dir / "fineweb_train_*.bin")

    @property
    def val_pattern(self) -> str:
        return str(self.out_dir / "fineweb_val_*.bin")


def demo_documents(min_chars: int = DOC_MIN_CHARS) -> list[str]:
    """The pydoc topics cut into documents, in a fixed order.

    Topics range from 100 B to 62 KB, so a split by whole topics gives a val set
    whose size swings with the few topics that land in it. Cutting each topic at
    blank lines into runs of at least `min_chars` characters gives ~200
    documents of FineWeb-like length, and a val set close to val_fraction of the text.
    """
    from pydoc_data.topics import topics

    docs = [doc for key in sorted(topics) for doc in cut_documents(topics[key], min_chars)]
    return [d for d in docs if d.strip()]


def cut_documents(text: str, min_chars: int) -> list[str]:
    """Runs of blank-line-separated paragraphs of at least `min_chars` characters."""
    docs: list[str] = []
    current: list[str] = []
    for para in text.split("\n\n"):
        current.append(para)
        if sum(map(len, current)) >= min_chars:
            docs.append("\n\n".join(current))
            current = []
    if current:
        docs.append("\n\n".join(current))
    return docs


def split_documents(docs: list[str], val_fraction: float) -> tuple[list[str], list[str]]:
    """Deterministic split that spreads val documents evenly over the list.

    Document i goes to val when floor((i+1)*f) > floor(i*f): exactly floor(n*f)
    val documents, not clustered in one alphabetical corner.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    train, val = [], []
    for i, doc in enumerate(docs):
        is_val = int((i + 1) * val_fraction) > int(i * val_fraction)
        (val if is_val else train).append(doc)
    if not train or not val:
        raise ValueError(f"val_fraction {val_fraction} leaves an empty split of {len(docs)} documents")
    return train, val


def train_tokenizer(docs: list[str], vocab_size: int, threads: int = 1) -> bytes:
    """A serialized SentencePiece BPE model trained on `docs` (deterministically)."""
    import sentencepiece as spm

    # One line per sentence: SentencePiece caps sentence length, and lines are
    # the natural unit in these docs.
    lines = [line[:4096] for doc in docs for line in doc.split("\n") if line.strip()]
    # Byte fallback covers rare characters, so a corpus with more distinct characters than the
    # vocabulary can hold (source code with Unicode in it) keeps only the common ones as pieces.
    distinct = len(set().union(*map(set, lines))) if lines else 0
    coverage = 1.0 if distinct < vocab_size // 2 else 0.9995
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines), model_writer=model, model_type="bpe",
            vocab_size=vocab_size, byte_fallback=True, split_digits=True,
            character_coverage=coverage, num_threads=threads, shuffle_input_sentence=False,
            # a large corpus trains the tokenizer on its first 1M lines
            input_sentence_size=0 if len(lines) <= 1_000_000 else 1_000_000, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID, pad_id=-1,
            minloglevel=2)
    except RuntimeError as e:  # e.g. a vocab too small for bytes + characters
        raise ValueError(f"SentencePiece training failed for vocab_size={vocab_size}: {e}") from e
    return model.getvalue()


def encode_documents(model_proto: bytes, docs: list[str]) -> np.ndarray:
    """BOS + ids of each document, concatenated."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_proto=model_proto)
    ids: list[int] = []
    for piece_ids in sp.encode(docs):
        ids.append(BOS_ID)
        ids.extend(piece_ids)
    return np.asarray(ids, dtype=np.uint16)


def corpus_documents(patterns: list[str], max_bytes: int, min_chars: int = DOC_MIN_CHARS) -> list[str]:
    """Text files matching `patterns` (sorted, deduplicated) cut at blank lines into documents,
    until `max_bytes` of text: a larger local corpus for GPU runs on machines with no network."""
    import glob

    paths = sorted({p for pat in patterns for p in glob.glob(pat, recursive=True) if os.path.isfile(p)})
    if not paths:
        raise ValueError(f"no files match {patterns}")
    docs: list[str] = []
    total = 0
    for path in paths:
        try:    # at most the bytes still wanted: a huge (or sparse) file is never read whole
            with open(path, "rb") as f:
                data = f.read(max(0, max_bytes - total))
            text = _utf8_prefix(data)
        except (OSError, UnicodeDecodeError):
            continue
        docs += cut_documents(text, min_chars)
        total += len(data)
        if total >= max_bytes:
            break
    return [d for d in docs if d.strip()]


def _utf8_prefix(data: bytes) -> str:
    """`data` as UTF-8, allowing a character cut by the read limit at its very end."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start >= len(data) - 3:
            return data[:exc.start].decode("utf-8")
        raise


def build_demo_data(out_dir: str | os.PathLike, vocab_size: int = 1024,
                    val_fraction: float = 0.1, force: bool = False,
                    corpus: list[str] | None = None, max_bytes: int = 100_000_000) -> DemoData:
    """Write tokenizer.model and train/val shards into out_dir; reuse a finished build.

    A previous build is reused when its manifest records the same vocab_size,
    val_fraction and recipe version and its files are present; force=True rebuilds.
    """
    out = Path(out_dir)
    params = {"version": BUILD_VERSION, "vocab_size": vocab_size, "val_fraction": val_fraction,
              **({"corpus": corpus, "max_bytes": max_bytes} if corpus else {})}
    if not force and (existing := _finished_build(out, params)) is not None:
        return existing

    docs = corpus_documents(corpus, max_bytes) if corpus else demo_documents()
    train_docs, val_docs = split_documents(docs, val_fraction)
    # the pydoc demo trains on one thread (bit-for-bit reproducible); a corpus uses every core
    proto = train_tokenizer(train_docs, vocab_size, threads=(os.cpu_count() or 1) if corpus else 1)
    train_ids = encode_documents(proto, train_docs)
    val_ids = encode_documents(proto, val_docs)

    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out, prefix=".demo-build-"))
    try:
        (tmp / TOKENIZER_NAME).write_bytes(proto)
        write_shard(tmp / TRAIN_NAME, train_ids)
        write_shard(tmp / VAL_NAME, val_ids)
        manifest = {**params, "train_tokens": int(train_ids.size), "val_tokens": int(val_ids.size)}
        (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1) + "\n")
        # Invalidate the old manifest first so a crash mid-way can't leave a
        # manifest that vouches for a mix of old and new files.
        (out / MANIFEST_NAME).unlink(missing_ok=True)
        for name in (TOKENIZER_NAME, TRAIN_NAME, VAL_NAME, MANIFEST_NAME):
            os.replace(tmp / name, out / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return _result(out, manifest)


def _finished_build(out: Path, params: dict) -> DemoData | None:
    """The build already in `out` if it matches `params` and is complete."""
    try:
        manifest = json.loads((out / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None
    if any(manifest.get(k) != v for k, v in params.items()):
        return None
    if not (out / TOKENIZER_NAME).is_file():
        return None
    try:  # the shards must exist, be well formed and hold the recorded counts
        counts = (read_header(out / TRAIN_NAME), read_header(out / VAL_NAME))
    except (OSError, ShardError):
        return None
    if counts != (manifest.get("train_tokens"), manifest.get("val_tokens")):
        return None
    return _result(out, manifest)


def _result(out: Path, manifest: dict) -> DemoData:
    return DemoData(out_dir=out, tokenizer_path=out / TOKENIZER_NAME, train_path=out / TRAIN_NAME,
                    val_path=out / VAL_NAME, train_tokens=int(manifest["train_tokens"]),
                    val_tokens=int(manifest["val_tokens"]), vocab_size=int(manifest["vocab_size"]))


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="build demo shards and a tokenizer with no download")
    ap.add_argument("out_dir", nargs="?", default="data/demo")
    ap.add_argument("--vocab-size", type=int, default=1024)
    ap.add_argument("--corpus", nargs="*", default=None, help="globs of local text files instead of pydoc")
    ap.add_argument("--max-bytes", type=int, default=100_000_000)
    a = ap.parse_args()
    result = build_demo_data(a.out_dir, a.vocab_size, corpus=a.corpus, max_bytes=a.max_bytes)
    print(json.dumps({k: str(v) for k, v in asdict(result).items()}, indent=1))
