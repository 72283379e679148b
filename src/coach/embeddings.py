"""The offline embedding model (all-MiniLM-L6-v2, int8 ONNX) behind LangChain's Embeddings interface."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import numpy as np
from langchain_core.embeddings import Embeddings

from coach.models import EMBEDDING_FILES, check


class MiniLMEmbeddings(Embeddings):
    """Sentence embeddings computed in-process with onnxruntime; no network, ~3 ms a query."""

    model_id = "all-MiniLM-L6-v2-onnx-int8"
    dimension = 384

    def __init__(self, models_dir: Path, batch_size: int = 32, max_tokens: int = 256) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        check(models_dir, EMBEDDING_FILES)
        folder = models_dir / "minilm"
        self._tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self._tokenizer.no_padding()  # the shipped tokenizer.json pads to 128; pad per batch instead
        self._tokenizer.enable_truncation(max_length=max_tokens)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 2
        options.log_severity_level = 3
        self._session = ort.InferenceSession(str(folder / "model.onnx"), options,
                                             providers=["CPUExecutionProvider"])
        self._inputs = {i.name for i in self._session.get_inputs()}
        self._batch_size = batch_size
        self._vocabulary = folder / "vocab.txt"

    def words(self) -> frozenset[str]:
        """The whole words of the model's word list: known English words, for the spelling pass."""
        lines = self._vocabulary.read_text(encoding="utf-8").splitlines()
        return frozenset(w for w in lines if w.isalpha() and w.islower())

    def _embed(self, texts: list[str]) -> list[list[float]]:
        out: list[list[float]] = []
        for start in range(0, len(texts), self._batch_size):
            batch = self._tokenizer.encode_batch(texts[start:start + self._batch_size])
            width = max(len(e.ids) for e in batch)  # pad per batch, not to a fixed length
            ids = np.zeros((len(batch), width), dtype=np.int64)
            mask = np.zeros_like(ids)
            for row, enc in enumerate(batch):
                ids[row, :len(enc.ids)] = enc.ids
                mask[row, :len(enc.ids)] = 1
            feeds: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in self._inputs:
                feeds["token_type_ids"] = np.zeros_like(ids)
            hidden = self._session.run(None, feeds)[0]
            weights = mask[..., None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
            pooled /= np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
            out.extend(pooled.astype(float).tolist())
        return out

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed passages."""
        return self._embed(list(texts))

    def embed_query(self, text: str) -> list[float]:
        """Embed one query."""
        return self._embed([text])[0]


class FakeEmbeddings(Embeddings):
    """Deterministic hashed bag-of-words vectors for unit tests: same text, same vector.

    Content words only (the lexical index's stop words and plural folding), so that a question and the
    passage that shares its words are close, and an unrelated question is not.
    """

    model_id = "fake-hash"

    def __init__(self, dimension: int = 256) -> None:
        self.dimension = dimension
        self.model_id = f"{type(self).model_id}-{dimension}"  # a subclass names another model

    def _vector(self, text: str) -> list[float]:
        from coach.retrieval import tokenize

        vec = np.zeros(self.dimension)
        for word in tokenize(re.sub(r"[^\w\s]", " ", text)):
            slot = int.from_bytes(hashlib.md5(word.encode()).digest()[:4], "little") % self.dimension
            vec[slot] += 1.0
        norm = np.linalg.norm(vec)
        return (vec / norm if norm else vec + 1 / np.sqrt(self.dimension)).tolist()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed passages."""
        return [self._vector(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        """Embed one query."""
        return self._vector(text)
