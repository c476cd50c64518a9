"""Real text → pre-training batches: streamed corpora, WordPiece, NSP pairs, 15% masking, dynamic padding.

A corpus is one or more text files (or folders of them): one sentence per line, a blank line between
documents (Google's BERT format). Files are read line by line from byte offsets, so a corpus larger
than memory streams, and the stream's position is a few integers that a checkpoint stores. Pairs
follow BERT's `create_pretraining_data.py`: segment A is a run of sentences, B is its true
continuation or, with probability 1/2, a run of sentences from another document (drawn from a pool of
recently read documents, kept as file positions). Masking happens when a batch is made, from a seed
derived from the run's seed and the example's index: the same example is masked the same way on every
rank and after a resume.
"""

from __future__ import annotations

import math
import os
import random
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch

from mbkernels.distill.losses import IGNORE_INDEX

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


# -- corpus files ----------------------------------------------------------------------------------

def corpus_files(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """The files of a corpus: each path is a file or a folder (its files, recursively, sorted)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files: list[str] = []
    for p in map(os.fspath, paths):
        if os.path.isfile(p):
            files.append(p)
        elif os.path.isdir(p):
            for root, dirs, names in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                files.extend(os.path.join(root, n) for n in sorted(names) if not n.startswith("."))
        else:
            raise FileNotFoundError(f"corpus: {p!r} is neither a file nor a folder")
    if not files:
        raise ValueError(f"corpus: no files found in {[os.fspath(p) for p in paths]}")
    return files


# End punctuation (possibly inside a closing quote or bracket), spaces, then a capital, quote or digit.
_SENTENCE_END = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"')\]]))\s+(?=[\"'(\[]?[A-Z0-9])")


def split_sentences(text: str) -> list[str]:
    """A plain rule-based splitter (end punctuation followed by a capital, quote or digit)."""
    out = []
    for para in text.splitlines():
        para = " ".join(para.split())
        if para:
            out.extend(s for s in _SENTENCE_END.split(para) if s.strip())
    return out


def write_corpus(documents: Iterable[str], path: str | os.PathLike) -> int:
    """Write raw documents in the corpus format (sentence per line, blank line between documents)."""
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for doc in documents:
            sentences = split_sentences(doc)
            if sentences:
                f.write("\n".join(sentences) + "\n\n")
                n += 1
    return n


# -- tokenizer ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Vocab:
    size: int
    pad: int
    unk: int
    cls: int
    sep: int
    mask: int

    @property
    def specials(self) -> frozenset[int]:
        return frozenset((self.pad, self.unk, self.cls, self.sep, self.mask))


def load_tokenizer(path: str | os.PathLike, lowercase: bool = True):
    """A WordPiece tokenizer (the `tokenizers` library) from a folder with vocab.txt, or the file."""
    path = os.fspath(path)
    vocab_file = os.path.join(path, "vocab.txt") if os.path.isdir(path) else path
    if not os.path.isfile(vocab_file):
        raise FileNotFoundError(f"tokenizer: expected a folder with vocab.txt or a vocab.txt file, got {path!r}")
    from tokenizers import BertWordPieceTokenizer

    return BertWordPieceTokenizer(vocab_file, lowercase=lowercase)


def vocab_of(tokenizer) -> Vocab:
    ids = [tokenizer.token_to_id(t) for t in SPECIAL_TOKENS]
    missing = [t for t, i in zip(SPECIAL_TOKENS, ids) if i is None]
    if missing:
        raise ValueError(f"tokenizer: expected the special tokens {SPECIAL_TOKENS} in its vocabulary, "
                         f"missing {missing}")
    return Vocab(tokenizer.get_vocab_size(), *ids)


# -- the example stream ------------------------------------------------------------------------------

@dataclass
class Example:
    index: int              # position in the stream (seeds its masking)
    input_ids: list[int]    # [CLS] A [SEP] B [SEP]
    token_type_ids: list[int]
    next_sentence_label: int  # 0: B follows A, 1: B is from another document


class PretrainingStream:
    """An endless, resumable stream of NSP sentence pairs from a corpus (epochs in a seeded file order)."""

    def __init__(self, files: Sequence[str], tokenizer, max_seq_len: int = 128, seed: int = 0,
                 nsp_prob: float = 0.5, short_seq_prob: float = 0.1, pool_size: int = 256):
        if max_seq_len < 8:
            raise ValueError(f"max_seq_len: expected at least 8 tokens, got {max_seq_len}")
        if not 0.0 <= nsp_prob <= 1.0:
            raise ValueError(f"nsp_prob: expected a probability in [0, 1], got {nsp_prob!r}")
        self.files = list(files)
        self.tokenizer = tokenizer
        self.vocab = vocab_of(tokenizer)
        self.max_seq_len = max_seq_len
        self.seed = seed
        self.nsp_prob = nsp_prob
        self.short_seq_prob = short_seq_prob
        self.pool_size = pool_size
        self.epoch, self.file_pos, self.offset = 0, 0, 0
        self.rng = random.Random(seed)
        self.pending: list[tuple[list[int], list[int], int]] = []
        self.pool: list[tuple[int, int]] = []   # (file index, byte offset) of documents read recently
        self.next_index = 0

    # -- state ----------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "file_pos": self.file_pos, "offset": self.offset,
                "rng": self.rng.getstate(), "pending": [list(map(list, p[:2])) + [p[2]] for p in self.pending],
                "pool": [list(p) for p in self.pool], "next_index": self.next_index,
                "files": self.files, "max_seq_len": self.max_seq_len, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        for key in ("files", "max_seq_len", "seed"):
            if state[key] != getattr(self, key):
                raise ValueError(f"data state: the checkpoint was written with {key}={state[key]!r}, "
                                 f"this run has {getattr(self, key)!r}")
        self.epoch, self.file_pos, self.offset = state["epoch"], state["file_pos"], state["offset"]
        rng = state["rng"]
        self.rng.setstate((rng[0], tuple(rng[1]), rng[2]))
        self.pending = [(p[0], p[1], p[2]) for p in state["pending"]]
        self.pool = [tuple(p) for p in state["pool"]]
        self.next_index = state["next_index"]

    # -- reading --------------------------------------------------------------------------------
    def _order(self, epoch: int) -> list[int]:
        order = list(range(len(self.files)))
        random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
        return order

    def _read_document(self, file_index: int, offset: int) -> tuple[list[str], int]:
        """Sentences of the document at `offset` (leading blank lines skipped), and the offset after it."""
        sentences: list[str] = []
        with open(self.files[file_index], "rb") as f:
            f.seek(offset)
            while True:
                line = f.readline()
                if not line:
                    break
                text = line.decode("utf-8", errors="replace").strip()
                if text:
                    sentences.append(text)
                elif sentences:
                    break
            return sentences, f.tell()

    def _tokenize(self, sentences: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch(sentences, add_special_tokens=False) if e.ids]

    def _next_document(self) -> tuple[list[list[int]], tuple[int, int]]:
        start_epoch = self.epoch
        while True:
            order = self._order(self.epoch)
            if self.file_pos >= len(order):
                if self.epoch - start_epoch >= 1:  # a whole pass without a single token
                    raise ValueError(f"corpus: no text the tokenizer turns into tokens in {self.files}")
                self.epoch, self.file_pos, self.offset = self.epoch + 1, 0, 0
                continue
            location = (order[self.file_pos], self.offset)
            sentences, end = self._read_document(*location)
            if not sentences:  # end of this file
                self.file_pos, self.offset = self.file_pos + 1, 0
                continue
            self.offset = end
            doc = self._tokenize(sentences)
            if doc:
                return doc, location

    def _random_segment(self, target: int, exclude: tuple[int, int]) -> list[int] | None:
        """Tokens of consecutive sentences of another document, at least `target` long if it has them."""
        candidates = [loc for loc in self.pool if loc != exclude]
        if not candidates:
            return None
        doc = self._tokenize(self._read_document(*candidates[self.rng.randrange(len(candidates))])[0])
        if not doc:
            return None
        out: list[int] = []
        for sent in doc[self.rng.randrange(len(doc)):]:
            out.extend(sent)
            if len(out) >= target:
                break
        return out

    def _truncate(self, a: list[int], b: list[int], max_tokens: int) -> None:
        while len(a) + len(b) > max_tokens:
            longer = a if len(a) > len(b) else b
            if self.rng.random() < 0.5:
                del longer[0]
            else:
                longer.pop()

    def _pairs(self, doc: list[list[int]], location: tuple[int, int]) -> list[tuple[list[int], list[int], int]]:
        """BERT's `create_instances_from_document` on one tokenized document."""
        rng, max_tokens = self.rng, self.max_seq_len - 3
        target = rng.randint(2, max_tokens) if rng.random() < self.short_seq_prob else max_tokens
        out, chunk, length, i = [], [], 0, 0
        while i < len(doc):
            chunk.append(doc[i])
            length += len(doc[i])
            if i == len(doc) - 1 or length >= target:
                a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
                a = [t for s in chunk[:a_end] for t in s]
                b = None
                is_random = len(chunk) == 1 or rng.random() < self.nsp_prob
                if is_random:
                    b = self._random_segment(max(1, target - len(a)), location)
                    if b is not None:
                        i -= len(chunk) - a_end  # the unused sentences start the next chunk
                if b is None:
                    is_random = False
                    b = [t for s in chunk[a_end:] for t in s]
                self._truncate(a, b, max_tokens)
                if a and b:
                    out.append((a, b, int(is_random)))
                chunk, length = [], 0
            i += 1
        return out

    def _remember(self, location: tuple[int, int]) -> None:
        if len(self.pool) < self.pool_size:
            self.pool.append(location)
        else:
            self.pool[self.rng.randrange(self.pool_size)] = location

    def __iter__(self) -> Iterator[Example]:
        return self

    def __next__(self) -> Example:
        while not self.pending:
            doc, location = self._next_document()
            self.pending = self._pairs(doc, location)
            self._remember(location)
        a, b, label = self.pending.pop(0)
        v = self.vocab
        ids = [v.cls, *a, v.sep, *b, v.sep]
        types = [0] * (len(a) + 2) + [1] * (len(b) + 1)
        example = Example(self.next_index, ids, types, label)
        self.next_index += 1
        return example


# -- masking and batches -----------------------------------------------------------------------------

def mask_tokens(ids: Sequence[int], vocab: Vocab, rng: random.Random, prob: float = 0.15,
                max_predictions: int | None = None) -> tuple[list[int], list[int]]:
    """BERT's masking: round(prob·n) of the n non-special tokens (at least one) are predicted; of
    those 80% become [MASK], 10% a random non-special token, 10% stay. Returns (inputs, labels)."""
    candidates = [i for i, t in enumerate(ids) if t not in vocab.specials]
    n = min(len(candidates), max(1, round(len(candidates) * prob)))
    if max_predictions is not None:
        n = min(n, max_predictions)
    inputs, labels = list(ids), [IGNORE_INDEX] * len(ids)
    for i in sorted(rng.sample(candidates, n)):
        labels[i] = ids[i]
        r = rng.random()
        if r < 0.8:
            inputs[i] = vocab.mask
        elif r < 0.9:
            token = rng.randrange(vocab.size)
            while token in vocab.specials:
                token = rng.randrange(vocab.size)
            inputs[i] = token
    return inputs, labels


def collate(examples: Sequence[Example], vocab: Vocab, seed: int, max_seq_len: int,
            pad_to_multiple_of: int = 8, mask_prob: float = 0.15,
            max_predictions: int | None = None) -> dict[str, torch.Tensor]:
    """Mask each example (seeded by `seed` and its index) and pad the batch to its longest example,
    rounded up to `pad_to_multiple_of` (at most `max_seq_len`; pass max_seq_len for fixed shapes)."""
    longest = max(len(e.input_ids) for e in examples)
    length = min(max_seq_len, math.ceil(longest / pad_to_multiple_of) * pad_to_multiple_of)
    b = len(examples)
    input_ids = torch.full((b, length), vocab.pad, dtype=torch.long)
    labels = torch.full((b, length), IGNORE_INDEX, dtype=torch.long)
    types = torch.zeros((b, length), dtype=torch.long)
    mask = torch.zeros((b, length), dtype=torch.long)
    for row, e in enumerate(examples):
        rng = random.Random(seed * (1 << 40) + e.index)
        ids, lab = mask_tokens(e.input_ids, vocab, rng, mask_prob, max_predictions)
        n = len(ids)
        input_ids[row, :n] = torch.tensor(ids)
        labels[row, :n] = torch.tensor(lab)
        types[row, :n] = torch.tensor(e.token_type_ids)
        mask[row, :n] = 1
    nsp = torch.tensor([e.next_sentence_label for e in examples], dtype=torch.long)
    return {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": types, "labels": labels,
            "next_sentence_label": nsp}
