"""llama.cpp's low-level API for several sequences at once: one context, one KV cache shared by them all.

The model file is loaded once; the context's cache is unified (every sequence may use any cell), so a
prefix evaluated once in sequence 0 is shared with another sequence by tagging its cells (`seq_cp`)
rather than copying them. With flash attention each token's attention runs over the cells of its own
sequence in order, skipping the others, so where they lie in the cache does not change its result (the
scheduler's `exact` mode needs that); without it prompts and steps are about 20% faster, but the sums run
over every cell and their rounding depends on where a sequence's cells lie (measured: one answer in eight
changed between a run alone and a batched one).

Only the scheduler's worker thread calls into an Engine (llama.cpp contexts are not thread-safe).
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PREFIX_SEQ = 0  # the sequence that holds the shared prompt prefix


class DecodeError(RuntimeError):
    """llama_decode failed; `no_room` when the KV cache had no free cells for the batch."""

    def __init__(self, code: int) -> None:
        super().__init__(f"llama_decode returned {code}")
        self.no_room = code == 1


@dataclass(frozen=True)
class Item:
    """One token of a batch: where it goes and whether its logits are wanted."""

    token: int
    pos: int
    seq: int
    logits: bool


@dataclass(frozen=True)
class Sampling:
    """How a sequence picks its tokens: greedy at temperature 0 (repeatable), else sampled with `seed`."""

    temperature: float = 0.0
    grammar: Any = None  # a llama_cpp.LlamaGrammar, for JSON of a schema
    seed: int = 1234
    repeat_penalty: float = 1.05
    penalty_last_n: int = 64
    top_p: float = 0.9


class Sampler:
    """A llama.cpp sampler chain of one sequence (it keeps the penalties' history); close() frees it."""

    def __init__(self, engine: LlamaEngine, sampling: Sampling) -> None:
        from llama_cpp import llama_cpp as C

        self._c = C
        chain = C.llama_sampler_chain_init(C.llama_sampler_chain_default_params())
        C.llama_sampler_chain_add(chain, C.llama_sampler_init_penalties(
            engine.n_vocab, sampling.penalty_last_n, sampling.repeat_penalty, 0.0, 0.0))
        if sampling.grammar is not None:
            g = sampling.grammar
            C.llama_sampler_chain_add(chain, C.llama_sampler_init_grammar(
                engine.vocab, g._grammar.encode("utf-8"), g._root.encode("utf-8")))
        if sampling.temperature <= 0:
            C.llama_sampler_chain_add(chain, C.llama_sampler_init_greedy())
        else:  # llama-cpp-python's create_completion defaults, with our top_p
            C.llama_sampler_chain_add(chain, C.llama_sampler_init_top_k(40))
            C.llama_sampler_chain_add(chain, C.llama_sampler_init_top_p(sampling.top_p, 1))
            C.llama_sampler_chain_add(chain, C.llama_sampler_init_min_p(0.05, 1))
            C.llama_sampler_chain_add(chain, C.llama_sampler_init_temp(sampling.temperature))
            C.llama_sampler_chain_add(chain, C.llama_sampler_init_dist(sampling.seed))
        self._chain: Any = chain
        self._ctx = engine.ctx

    def sample(self, index: int) -> int:
        """The next token from the logits of the batch's `index`-th token (and remember it)."""
        return int(self._c.llama_sampler_sample(self._chain, self._ctx, index))

    def close(self) -> None:
        """Free the chain (idempotent)."""
        chain, self._chain = self._chain, None
        if chain is not None:
            self._c.llama_sampler_free(chain)


class LlamaEngine:
    """A GGUF model and one context with `n_seq` sequences (plus the prefix's) over `n_ctx` shared cells."""

    def __init__(self, model_path: Path, n_ctx: int, n_seq: int, n_threads: int, n_batch: int,
                 flash_attention: bool = True) -> None:
        from llama_cpp import _logger
        from llama_cpp import llama_cpp as C
        from llama_cpp._internals import LlamaContext, LlamaModel

        _logger.set_verbose(False)  # llama.cpp's own log: errors only
        self._c = C
        self.n_ctx, self.n_batch, self.n_seq = n_ctx, n_batch, n_seq
        self.model = LlamaModel(path_model=str(model_path), params=C.llama_model_default_params(), verbose=False)
        self.vocab = self.model.vocab
        self.n_vocab = C.llama_vocab_n_tokens(self.vocab)
        params = C.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = n_batch
        params.n_ubatch = n_batch
        params.n_seq_max = n_seq + 1
        params.kv_unified = True
        params.n_threads = n_threads
        params.n_threads_batch = n_threads
        params.flash_attn_type = (C.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash_attention
                                  else C.LLAMA_FLASH_ATTN_TYPE_DISABLED)
        params.no_perf = True
        self.context = LlamaContext(model=self.model, params=params, verbose=False)
        self.ctx = self.context.ctx
        self._memory = C.llama_get_memory(self.ctx)
        self._batch = C.llama_batch_init(n_batch, 0, 1)
        self.ends = {t for t in range(self.n_vocab) if C.llama_vocab_is_eog(self.vocab, t)}
        self._piece = ctypes.create_string_buffer(256)

    # -- text ---------------------------------------------------------------------------------------
    def tokenize(self, text: str, special: bool = True) -> list[int]:
        """Tokens of text (special tokens such as <|im_start|> read as such when `special`)."""
        return list(self.model.tokenize(text.encode("utf-8"), add_bos=False, special=special))

    def piece(self, token: int) -> bytes:
        """The bytes a generated token stands for (nothing for control tokens)."""
        n = self._c.llama_token_to_piece(self.vocab, token, self._piece, len(self._piece), 0, False)
        return self._piece.raw[:n] if n > 0 else b""

    def is_end(self, token: int) -> bool:
        """Whether the token ends a turn (<|im_end|>, <|endoftext|>, ...)."""
        return token in self.ends

    def sampler(self, sampling: Sampling) -> Sampler:
        """A new sampler chain for one sequence."""
        return Sampler(self, sampling)

    # -- the cache --------------------------------------------------------------------------------------
    def remove(self, seq: int, start: int = -1, end: int = -1) -> None:
        """Forget the sequence's cells from position `start` (all when -1) to `end` (the end when -1)."""
        self._c.llama_memory_seq_rm(self._memory, seq, start, end)

    def share(self, source: int, target: int, end: int) -> None:
        """Let `target` use the first `end` positions of `source` (the cells are tagged, not copied)."""
        self._c.llama_memory_seq_cp(self._memory, source, target, 0, end)

    def decode(self, items: Sequence[Item]) -> None:
        """Evaluate one batch (at most n_batch tokens); raises DecodeError."""
        batch = self._batch
        for i, item in enumerate(items):
            batch.token[i] = item.token
            batch.pos[i] = item.pos
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = item.seq
            batch.logits[i] = item.logits
        batch.n_tokens = len(items)
        code = self._c.llama_decode(self.ctx, batch)
        if code != 0:
            raise DecodeError(code)

    def save(self, seq: int) -> bytes:
        """The cells of one sequence, as llama.cpp serialises them."""
        size = self._c.llama_state_seq_get_size(self.ctx, seq)
        buffer = (ctypes.c_uint8 * size)()
        written = self._c.llama_state_seq_get_data(self.ctx, buffer, size, seq)
        return bytes(buffer)[:written]

    def load(self, seq: int, data: bytes) -> bool:
        """Restore a sequence saved by save(); False when llama.cpp refuses the data."""
        self.remove(seq)
        buffer = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        if self._c.llama_state_seq_set_data(self.ctx, buffer, len(data), seq) == 0:
            self.remove(seq)
            return False
        return True

    def close(self) -> None:
        """Free the batch, the context and the model."""
        if self._batch is not None:
            self._c.llama_batch_free(self._batch)
            self._batch = None
        self.context.close()
        self.model.close()
