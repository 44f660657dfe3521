"""A character-level language model (GRU, LSTM or causal Transformer) on text from a seeded Markov source.

The source is an order-``order`` Markov chain over ``vocab`` symbols: each of the ``vocab**order``
contexts has its own next-symbol distribution drawn from a symmetric Dirichlet(``alpha``) (small
``alpha``: few likely successors, so there is structure to learn). The first ``order`` symbols of every
sequence are uniform, the rest follow the chain. The chain and the corpus are drawn from ``data_seed``
(numpy ``Generator``, no global state), the same for every optimizee seed, which fixes only the initial
weights and the batch order. Nothing is downloaded; generating the default corpus takes milliseconds.

A sequence of ``seq_len + 1`` symbols gives inputs ``[:-1]`` and next-symbol targets ``[1:]``; the loss is
the mean cross-entropy over every position and ``evaluate`` adds the next-symbol accuracy. Uniform
guessing scores ``ln(vocab)``; :attr:`CharLM.bayes_test_loss` is the best loss any model can reach on the
test split (the chain's own conditional probabilities).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from optimizees.classification import ClassificationOptimizee
from optimizees.data import ArrayDataset

ARCHS: tuple[str, ...] = ("gru", "lstm", "transformer")
#: the only generated task so far (the ``dataset`` name :class:`CharLM` passes to its base)
TASK = "markov"


def markov_chain(vocab: int, order: int, alpha: float, rng: np.random.Generator) -> np.ndarray:
    """Next-symbol probabilities ``[vocab**order, vocab]`` of a random order-``order`` chain; row ``c`` is
    the context whose symbols, oldest first, are the base-``vocab`` digits of ``c``."""
    return rng.dirichlet(np.full(vocab, alpha), size=vocab**order)


def sample_markov(
    probs: np.ndarray, order: int, n: int, length: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` sequences of ``length`` symbols from the chain ``probs`` (first ``order`` symbols uniform) and
    the negative log-likelihood of each symbol under the source (``ln(vocab)`` for the uniform ones).

    Returns:
        ``(symbols [n, length] int64, nll [n, length] float64)``.
    """
    vocab = probs.shape[1]
    cdf = np.cumsum(probs, axis=1)
    cdf[:, -1] = 1.0  # guard the last bin against rounding
    seq = np.empty((n, length), dtype=np.int64)
    nll = np.full((n, length), math.log(vocab))
    head = min(order, length)
    seq[:, :head] = rng.integers(0, vocab, size=(n, head))
    ctx = np.zeros(n, dtype=np.int64)
    for j in range(head):
        ctx = ctx * vocab + seq[:, j]
    top = vocab ** (order - 1)
    for t in range(head, length):
        u = rng.random(n)
        nxt = (cdf[ctx] < u[:, None]).sum(axis=1)
        seq[:, t] = nxt
        nll[:, t] = -np.log(probs[ctx, nxt])
        ctx = (ctx % top) * vocab + nxt
    return seq, nll


def markov_corpus(
    *, vocab: int, order: int, alpha: float, seq_len: int, num_train: int, num_test: int, data_seed: int
) -> tuple[ArrayDataset, float]:
    """The train and test sequences of one seeded chain as an :class:`ArrayDataset` (inputs and targets
    ``[N, seq_len]`` int64, ``num_classes = vocab``) and the source's mean NLL of the test targets."""
    rng = np.random.default_rng(data_seed)
    probs = markov_chain(vocab, order, alpha, rng)
    seq, nll = sample_markov(probs, order, num_train + num_test, seq_len + 1, rng)
    x, y = torch.from_numpy(seq[:, :-1].copy()), torch.from_numpy(seq[:, 1:].copy())
    data = ArrayDataset(TASK, x[:num_train], y[:num_train], x[num_train:], y[num_train:], num_classes=vocab)
    return data, float(nll[num_train:, 1:].mean())


class TokenModel(nn.Module):
    """Embedding, a sequence body, and a Linear read-out to next-symbol logits ``[B, T, vocab]``.

    ``gru`` / ``lstm``: ``layers`` recurrent layers of width ``hidden``. ``transformer``: a learned
    position embedding and ``layers`` pre-norm ``nn.TransformerEncoderLayer`` (``heads`` heads, feed-forward
    ``4 * hidden``, no dropout) under a causal mask, so position ``t`` sees only symbols ``<= t``.
    """

    def __init__(self, arch: str, vocab: int, hidden: int, layers: int, heads: int, seq_len: int) -> None:
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"char_lm: unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")
        self.arch = arch
        self.embed = nn.Embedding(vocab, hidden)
        self.body: nn.Module
        if arch == "transformer":
            self.pos = nn.Embedding(seq_len, hidden)
            layer = nn.TransformerEncoderLayer(
                hidden, heads, dim_feedforward=4 * hidden, dropout=0.0, batch_first=True, norm_first=True
            )
            self.body = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
            self.norm = nn.LayerNorm(hidden)
        else:
            rnn = nn.GRU if arch == "gru" else nn.LSTM
            self.body = rnn(hidden, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, x: Tensor) -> Tensor:
        h = self.embed(x)
        if self.arch == "transformer":
            t = x.shape[1]
            h = h + self.pos(torch.arange(t, device=x.device))
            mask = nn.Transformer.generate_square_subsequent_mask(t, device=x.device)
            h = self.norm(self.body(h, mask=mask, is_causal=True))
        else:
            h = self.body(h)[0]
        return self.head(h)


class CharLM(ClassificationOptimizee):
    """Next-symbol cross-entropy of a small GRU/LSTM/Transformer on a generated Markov-chain corpus.

    The defaults (GRU, 64 units, vocab 16, order 2, 2,048 training sequences of 32 symbols) train on one
    CPU core in seconds; ``hidden: 256, layers: 2, seq_len: 128, num_train: 20000, order: 3`` is a GPU size.

    Args:
        seed, device: see :class:`~optimizees.base.Optimizee`.
        arch: ``gru`` (default), ``lstm`` or ``transformer``.
        vocab: alphabet size.
        order: the chain's memory in symbols (``vocab**order`` contexts).
        alpha: Dirichlet concentration of each context's next-symbol distribution (smaller: more
            predictable text).
        seq_len: symbols per input sequence (the model predicts each one's successor).
        num_train, num_test: sequences in the training and test splits.
        hidden: embedding and hidden width (``d_model`` for the transformer).
        layers: recurrent or transformer layers.
        heads: attention heads (transformer only; must divide ``hidden``).
        data_seed: draws the chain and the corpus (independent of ``seed``).
        batch_size, test_batch_size, val_fraction: see
            :class:`~optimizees.classification.DatasetOptimizee` (``val`` holds out whole training sequences).
    """

    default_steps = 300

    def __init__(
        self,
        seed: int = 0,
        device: str | torch.device = "cpu",
        *,
        arch: str = "gru",
        vocab: int = 16,
        order: int = 2,
        alpha: float = 0.1,
        seq_len: int = 32,
        num_train: int = 2048,
        num_test: int = 512,
        hidden: int = 64,
        layers: int = 1,
        heads: int = 4,
        data_seed: int = 0,
        batch_size: int = 64,
        test_batch_size: int = 512,
        val_fraction: float = 0.0,
    ) -> None:
        if arch not in ARCHS:
            raise ValueError(f"char_lm: unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")
        ints = {
            "vocab": (vocab, 2),
            "order": (order, 1),
            "seq_len": (seq_len, 1),
            "num_train": (num_train, 1),
        }
        ints |= {"num_test": (num_test, 1), "hidden": (hidden, 1), "layers": (layers, 1), "heads": (heads, 1)}
        for name, (value, low) in ints.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"char_lm: {name} must be a whole number >= {low}, got {value!r}")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < math.inf:
            raise ValueError(f"char_lm: alpha must be a finite number > 0, got {alpha!r}")
        if arch == "transformer" and hidden % heads:
            raise ValueError(f"char_lm: heads ({heads}) must divide hidden ({hidden}) for the transformer")
        self.arch, self.hidden, self.layers, self.heads = arch, hidden, layers, heads
        self.vocab, self.order, self.alpha, self.seq_len = vocab, order, float(alpha), seq_len
        self.corpus_sizes, self.data_seed = (num_train, num_test), int(data_seed)
        #: the source's own mean NLL of the test targets: the lowest test loss any model can reach
        self.bayes_test_loss = math.nan
        super().__init__(
            seed=seed,
            device=device,
            dataset=TASK,
            batch_size=batch_size,
            test_batch_size=test_batch_size,
            val_fraction=val_fraction,
        )

    def _load_data(self, dataset: str, root: object, download: bool) -> ArrayDataset:
        """The generated corpus (``root`` and ``download`` do not apply)."""
        num_train, num_test = self.corpus_sizes
        data, self.bayes_test_loss = markov_corpus(
            vocab=self.vocab,
            order=self.order,
            alpha=self.alpha,
            seq_len=self.seq_len,
            num_train=num_train,
            num_test=num_test,
            data_seed=self.data_seed,
        )
        return data.to(self.device)

    def _strata(self, pool: Tensor) -> Tensor:
        """One stratum: a sequence has no single class, so ``val`` is a fixed random share of sequences."""
        return torch.zeros(len(pool), dtype=torch.long)

    def _build_module(self) -> nn.Module:
        return TokenModel(self.arch, self.vocab, self.hidden, self.layers, self.heads, self.seq_len)
