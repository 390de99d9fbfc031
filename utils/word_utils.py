"""Vocabulary and tokeniser (docs/behaviour.md §2).

``Corpus`` and ``Dictionary`` must keep these names at this module path: the authors' released
``corpus.pth`` files are pickles of exactly these classes. They are loaded with
``torch.load(weights_only=True)`` with only these two classes allow-listed (:func:`load_corpus`).
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterable

import torch

from utils.io import UserInputError, atomic_save, safe_load

PAD_TOKEN = "<pad>"
UNK_TOKEN = "<unk>"
END_TOKEN = "<eos>"
SENTENCE_SPLIT_REGEX = re.compile(r"(\W+)")


class Dictionary:
    """Word <-> index maps (``word2idx``, ``idx2word``), attribute names as in released corpora."""

    def __init__(self) -> None:
        self.word2idx: dict[str, int] = {}
        self.idx2word: list[str] = []

    def add_word(self, word: str) -> int:
        if word not in self.word2idx:
            self.idx2word.append(word)
            self.word2idx[word] = len(self.idx2word) - 1
        return self.word2idx[word]

    def __len__(self) -> int:
        return len(self.idx2word)

    def __contains__(self, word: str) -> bool:
        return word in self.word2idx

    def __getitem__(self, key: int | str) -> str | int:
        if isinstance(key, int):
            return self.idx2word[key]
        if isinstance(key, str):
            return self.word2idx[key]
        raise TypeError("a Dictionary is indexed by a word (str) or an index (int)")


def split_words(line: str) -> list[str]:
    """Lower-cased tokens of ``line`` as the reference splits them (delimiters kept, single-space pieces dropped).

    Quirk (docs/behaviour.md §2): a multi-character delimiter such as ``", "`` stays one token.
    """
    pieces = SENTENCE_SPLIT_REGEX.split(line.strip())
    return [piece.lower() for piece in pieces if piece and piece != " "]


class Corpus:
    """A vocabulary (``dictionary``) and the reference tokeniser."""

    def __init__(self) -> None:
        self.dictionary = Dictionary()

    def __len__(self) -> int:
        return len(self.dictionary)

    def tokenize(self, line: str, max_len: int = 20) -> torch.Tensor:
        """Word ids of ``line`` (docs/behaviour.md §2), ``max_len`` of them: truncated, or padded with ``<eos>``
        then ``<pad>`` (= 0).

        A trailing ``.`` is dropped; unknown words (and ``<eos>`` if the vocabulary lacks it) become ``<unk>``.
        """
        words, _ = read_tokens(line, max_len)
        if 0 < len(words) < max_len:
            words = words + [END_TOKEN] + [PAD_TOKEN] * (max_len - len(words) - 1)
        unk = self.dictionary.word2idx[UNK_TOKEN]
        return torch.tensor([self.dictionary.word2idx.get(word, unk) for word in words], dtype=torch.long)


def read_tokens(line: str, max_len: int = 20) -> tuple[list[str], int]:
    """The tokens of ``line`` that :meth:`Corpus.tokenize` reads (a trailing ``.`` dropped, at most ``max_len``;
    all for ``max_len <= 0``) and how many tokens past ``max_len`` it drops."""
    words = split_words(line)
    if not words:
        raise ValueError(f"cannot tokenise an empty phrase: {line!r}")
    if words[-1] == ".":
        words = words[:-1]
    if 0 < max_len < len(words):
        return words[:max_len], len(words) - max_len
    return words, 0


def has_known_word(corpus: Corpus, line: str, max_len: int = 0) -> bool:
    """Whether any word of ``line`` that is read (the first ``max_len`` tokens; all for 0), a token with a letter or
    digit, is in the vocabulary, i.e. not ``<unk>``."""
    words = read_tokens(line, max_len)[0] if split_words(line) else []
    return any(word in corpus.dictionary for word in words if any(c.isalnum() for c in word))


def build_corpus(sentences: Iterable[str]) -> Corpus:
    """A corpus of every token of ``sentences``: ``<pad>`` = 0, ``<unk>`` = 1, ``<eos>`` = 2, then by first use."""
    corpus = Corpus()
    for token in (PAD_TOKEN, UNK_TOKEN, END_TOKEN):
        corpus.dictionary.add_word(token)
    for sentence in sentences:
        for word in split_words(sentence):
            corpus.dictionary.add_word(word)
    return corpus


def load_corpus(path: str | os.PathLike) -> Corpus:
    """Load a ``corpus.pth`` safely (only ``Corpus`` and ``Dictionary`` allow-listed) and check it."""
    corpus = safe_load(path, what="corpus file", allowed_globals=[Corpus, Dictionary])
    if not isinstance(corpus, Corpus) or not isinstance(getattr(corpus, "dictionary", None), Dictionary):
        raise UserInputError(f"corpus file {path} does not hold a utils.word_utils.Corpus")
    words, index = getattr(corpus.dictionary, "idx2word", None), getattr(corpus.dictionary, "word2idx", None)
    consistent = (isinstance(words, list) and isinstance(index, dict) and len(words) == len(index)
                  and all(isinstance(w, str) and index.get(w) == i for i, w in enumerate(words)))
    if not consistent:
        raise UserInputError(f"corpus file {path}: its dictionary must map each word (str) to its position in "
                             "idx2word and back (word2idx), one to one")
    if not words or words[0] != PAD_TOKEN:
        raise UserInputError(f"corpus file {path}: index 0 must be {PAD_TOKEN!r} (padding id 0), got {words[:1]}")
    if UNK_TOKEN not in corpus.dictionary:
        raise UserInputError(f"corpus file {path} has no {UNK_TOKEN!r} token")
    return corpus


def save_corpus(corpus: Corpus, path: str | os.PathLike) -> None:
    atomic_save(corpus, path)
