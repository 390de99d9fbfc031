"""Phrase encoder (docs/behaviour.md §2): embedding -> MLP -> bidirectional LSTM, and phrase attention (MAttNet)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


def trim_padding(word_id: torch.Tensor) -> torch.Tensor:
    """Cut ``word_id`` (B, L_max) to ``L = max over the batch of count(id != 0)`` columns (docs/behaviour.md §2)."""
    return word_id[:, : int((word_id != 0).sum(1).max())]  # (B, L)


class RNNEncoder(nn.Module):
    """Embedding(V, E) -> Dropout(0.2) -> Linear(E, E) + ReLU -> 1-layer bidirectional LSTM(E -> 2E).

    Parameter names (``embedding``, ``mlp.0``, ``rnn.*``) are the reference's; E = 512 there.
    """

    def __init__(self, vocab_size: int, emb_size: int = 512, dropout: float = 0.2) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, emb_size)
        self.input_dropout = nn.Dropout(dropout)
        self.mlp = nn.Sequential(nn.Linear(emb_size, emb_size), nn.ReLU())
        self.rnn = nn.LSTM(emb_size, emb_size, num_layers=1, batch_first=True, bidirectional=True)

    def forward(self, word_id: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode ``word_id`` (B, L), padded with 0 at the end; every row needs at least one token.

        Returns ``context`` (B, L, 2E) and ``embedded`` (B, L, E) (zero at padded positions) and the
        sentence vector (B, 2E) = ``context`` at position ``length - 1``.
        quirk (docs/behaviour.md §2): the backward half of the sentence vector has seen only the last token.
        """
        lengths = (word_id != 0).sum(1)  # (B,)
        if bool((lengths == 0).any()):
            raise ValueError("every phrase needs at least one token (a word_id row is all padding)")
        embedded = self.mlp(self.input_dropout(self.embedding(word_id)))  # (B, L, E)
        packed = pack_padded_sequence(embedded, lengths.cpu(), batch_first=True, enforce_sorted=False)
        output, _ = self.rnn(packed)
        context, _ = pad_packed_sequence(output, batch_first=True, total_length=word_id.shape[1])  # (B, L, 2E)
        embedded = embedded * (word_id != 0).unsqueeze(-1).to(embedded.dtype)  # padded steps are 0 as packed
        sentence = context[torch.arange(word_id.shape[0], device=word_id.device), lengths - 1]  # (B, 2E)
        return context, embedded, sentence


class PhraseAttention(nn.Module):
    """Attention over the words: softmax(Linear(2E, 1)(context)) masked to real tokens and renormalised."""

    def __init__(self, context_size: int) -> None:
        super().__init__()
        self.fc = nn.Linear(context_size, 1)

    def forward(self, context: torch.Tensor, embedded: torch.Tensor, word_id: torch.Tensor) -> torch.Tensor:
        """Attention-weighted sum of ``embedded`` (B, L, E) -> (B, E)."""
        attn = self.fc(context).squeeze(2).softmax(dim=1)  # (B, L)
        attn = attn * (word_id != 0).to(attn.dtype)
        attn = attn / attn.sum(1, keepdim=True)
        return torch.bmm(attn.unsqueeze(1), embedded).squeeze(1)  # (B, E)
