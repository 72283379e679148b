"""Chroma: the passage index, embedded on disk or on a server, synced incrementally by content hash."""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from coach.config import Settings
from coach.errors import IndexError_
from coach.knowledge import Chunk

_PASSAGES = "-passages-"


class Embedder(Protocol):
    """What the index needs of an embedding model."""

    model_id: str
    dimension: int

    def embed_documents(self, texts: list[str]) -> list[list[float]]: ...

    def embed_query(self, text: str) -> list[float]: ...


@dataclass
class SyncReport:
    """What a sync did."""

    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    seconds: float = 0.0
    collection: str = ""

    @property
    def embedded(self) -> int:
        """Chunks that went through the embedding model."""
        return self.added + self.updated

    def summary(self) -> str:
        """One line for a person."""
        rate = self.embedded / self.seconds if self.seconds > 0 else 0.0
        return (f"added {self.added}, updated {self.updated}, removed {self.removed}, "
                f"unchanged {self.unchanged} in {self.seconds:.2f} s ({rate:.1f} chunks/s)")


@dataclass(frozen=True)
class Hit:
    """A dense search result."""

    id: str
    text: str
    metadata: dict[str, Any]
    similarity: float


def connect(settings: Settings) -> Any:
    """A Chroma client: HttpClient when a server URL is set, else PersistentClient under the data folder."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    chroma_settings = ChromaSettings(anonymized_telemetry=False)
    if settings.chroma_url:
        url = urlparse(settings.chroma_url if "://" in settings.chroma_url else f"http://{settings.chroma_url}")
        host, port = url.hostname or "127.0.0.1", url.port or 8000
        try:
            client = chromadb.HttpClient(host=host, port=port, ssl=url.scheme == "https",
                                         settings=chroma_settings)
            client.heartbeat()
        except Exception as exc:  # the client raises several unrelated types for "not there"
            raise IndexError_(
                f"Cannot reach the Chroma server at {host}:{port} ({type(exc).__name__}); start it with "
                f"`chroma run --path DIR --host {host} --port {port}` or unset COACH_CHROMA_URL."
            ) from None
        return client
    path = settings.chroma_dir
    if path.exists() and not path.is_dir():
        raise IndexError_(f"{path} is a file, not a Chroma index folder; set COACH_CHROMA_PATH to a folder.")
    if path.is_dir() and any(path.iterdir()) and not (path / "chroma.sqlite3").is_file():
        raise IndexError_(
            f"{path} is not a Chroma index (no chroma.sqlite3 inside); point COACH_CHROMA_PATH at an "
            "index or an empty folder."
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
        client = chromadb.PersistentClient(path=str(path), settings=chroma_settings)
        client.list_collections()
    except Exception as exc:
        raise IndexError_(
            f"The Chroma index in {path} cannot be opened ({type(exc).__name__}: {str(exc)[:120]}); "
            "move it away and run `coach index`."
        ) from None
    return client


class Index:
    """The active passages collection of one Chroma client, tied to one embedding model."""

    def __init__(self, client: Any, embedder: Embedder, prefix: str = "coach") -> None:
        self.client = client
        self.embedder = embedder
        self.prefix = prefix

    # -- collections --------------------------------------------------------------------------
    def _candidates(self) -> list[Any]:
        found = []
        for col in self.client.list_collections():
            name = col if isinstance(col, str) else col.name
            if name.startswith(self.prefix + _PASSAGES):
                found.append(self.client.get_collection(name))
        return found

    def _active(self) -> Any | None:
        complete = [c for c in self._candidates() if (c.metadata or {}).get("complete")]
        return max(complete, key=lambda c: (c.metadata or {}).get("created", 0.0), default=None)

    def _check_model(self, collection: Any) -> None:
        meta = collection.metadata or {}
        built, dim = meta.get("embedding_model"), meta.get("dimension")
        if built != self.embedder.model_id or dim != self.embedder.dimension:
            raise IndexError_(
                f"The index was built with embedding model {built} ({dim} dimensions) but coach is set up "
                f"with {self.embedder.model_id} ({self.embedder.dimension}); run `coach index --rebuild`."
            )

    def collection(self) -> Any:
        """The active collection, checked against the embedding model; raises when there is none."""
        active = self._active()
        if active is None:
            raise IndexError_("There is no index yet: run `coach index` (the chat UI builds it on start).")
        self._check_model(active)
        return active

    def exists(self) -> bool:
        """Whether a complete index is there."""
        return self._active() is not None

    def _new_collection(self) -> Any:
        name = f"{self.prefix}{_PASSAGES}{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:6]}"
        return self.client.create_collection(name, metadata=self._meta(complete=False))

    def _meta(self, complete: bool, created: float | None = None) -> dict[str, Any]:
        return {"embedding_model": self.embedder.model_id, "dimension": self.embedder.dimension,
                "complete": complete, "created": created or time.time()}

    # -- writing ------------------------------------------------------------------------------
    def sync(self, chunks: Sequence[Chunk], progress: bool = True) -> SyncReport:
        """Make the index hold exactly these chunks, embedding only what is new or changed."""
        start = time.perf_counter()
        collection = self._active()
        if collection is None:
            return self.rebuild(chunks, progress)
        self._check_model(collection)
        report = self._apply(collection, chunks, progress)
        report.seconds = time.perf_counter() - start
        return report

    def rebuild(self, chunks: Sequence[Chunk], progress: bool = True) -> SyncReport:
        """Build a fresh collection beside the active one and switch only when it is complete.

        An interruption part-way leaves the previous index active and usable; the half-built
        collection is removed by the next rebuild.
        """
        start = time.perf_counter()
        old = self._candidates()
        fresh = self._new_collection()
        report = self._apply(fresh, chunks, progress)
        fresh.modify(metadata={**self._meta(complete=True), "revision": uuid.uuid4().hex})
        for col in old:
            try:
                self.client.delete_collection(col.name)
            except Exception:  # another instance may have removed it already
                pass
        report.seconds = time.perf_counter() - start
        return report

    def _apply(self, collection: Any, chunks: Sequence[Chunk], progress: bool) -> SyncReport:
        wanted = {c.id: c for c in chunks}
        existing = collection.get(include=["metadatas"])
        have = {i: (m or {}).get("hash") for i, m in zip(existing["ids"], existing["metadatas"] or [], strict=True)}
        report = SyncReport(collection=collection.name)
        todo: list[Chunk] = []
        for cid, chunk in wanted.items():
            if cid not in have:
                report.added += 1
                todo.append(chunk)
            elif have[cid] != chunk.hash:
                report.updated += 1
                todo.append(chunk)
            else:
                report.unchanged += 1
        stale = [i for i in have if i not in wanted]
        report.removed = len(stale)
        batch = min(256, _max_batch(self.client))
        bar = _progress(len(todo), progress)
        for i in range(0, len(todo), batch):
            part = todo[i:i + batch]
            vectors = self.embedder.embed_documents([c.embed_text for c in part])
            collection.upsert(ids=[c.id for c in part], embeddings=vectors,
                              documents=[c.text for c in part], metadatas=[c.metadata() for c in part])
            bar(len(part))
        for i in range(0, len(stale), batch):
            collection.delete(ids=stale[i:i + batch])
        bar(0, done=True)
        if report.embedded or report.removed:
            # Readers (other app instances too) notice the change by this revision, without a full scan.
            meta = dict(collection.metadata or {})
            meta["revision"] = uuid.uuid4().hex
            collection.modify(metadata=meta)
        return report

    # -- reading ------------------------------------------------------------------------------
    def all_passages(self) -> tuple[str, list[str], list[str], list[dict[str, Any]]]:
        """(collection name, ids, documents, metadatas) of every passage."""
        collection = self.collection()
        got = collection.get(include=["documents", "metadatas"])
        return collection.name, list(got["ids"]), list(got["documents"] or []), [
            dict(m or {}) for m in (got["metadatas"] or [])]

    def query(self, text: str, n: int) -> list[Hit]:
        """The n passages nearest to text by the embedding model, with cosine similarity."""
        collection = self.collection()
        vector = self.embedder.embed_query(text)
        res = collection.query(query_embeddings=[vector], n_results=max(1, n),
                               include=["documents", "metadatas", "distances"])
        hits = []
        for cid, doc, meta, dist in zip(res["ids"][0], (res["documents"] or [[]])[0],
                                        (res["metadatas"] or [[]])[0], (res["distances"] or [[]])[0], strict=True):
            # Default space is squared L2; on unit vectors it maps to cosine as 1 - d/2.
            hits.append(Hit(cid, doc or "", dict(meta or {}), 1.0 - float(dist) / 2.0))
        return hits

    def revision(self) -> tuple[str, str, int]:
        """Changes whenever the active index's content changes: (collection, revision, count)."""
        collection = self.collection()
        return collection.name, str((collection.metadata or {}).get("revision", "")), collection.count()

    def count(self) -> int:
        """Passages in the active index (0 when there is none)."""
        active = self._active()
        return active.count() if active is not None else 0


def _max_batch(client: Any) -> int:
    try:
        return int(client.get_max_batch_size())
    except Exception:
        return 256


def _progress(total: int, enabled: bool) -> Callable[..., None]:
    """A progress callback: a tqdm bar on stderr for long runs, silent for short ones."""
    if not enabled or total < 200:
        return lambda n, done=False: None
    from tqdm import tqdm

    bar = tqdm(total=total, unit="chunk", desc="embedding", file=sys.stderr, leave=False)

    def update(n: int, done: bool = False) -> None:
        bar.update(n)
        if done:
            bar.close()

    return update


def open_index(settings: Settings, embedder: Embedder) -> Index:
    """The index for these settings (connects; does not require that it exists)."""
    return Index(connect(settings), embedder, settings.collection)


def default_embedder(settings: Settings) -> Embedder:
    """The real offline embedding model from the models folder."""
    from coach.embeddings import MiniLMEmbeddings

    return MiniLMEmbeddings(Path(settings.models_dir))
