"""Chroma: the passage index, embedded on disk or on a server, synced incrementally by content hash."""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import urlparse

from coach import index_check
from coach.config import Settings
from coach.errors import CoachError, IndexDamagedError, IndexError_, IndexUnreachableError
from coach.knowledge import Chunk

_PASSAGES = "-passages-"
T = TypeVar("T")


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
    repaired: str = ""  # what was wrong with the index this sync rebuilt

    @property
    def embedded(self) -> int:
        """Chunks that went through the embedding model."""
        return self.added + self.updated

    def summary(self) -> str:
        """One line for a person."""
        rate = self.embedded / self.seconds if self.seconds > 0 else 0.0
        repaired = f"rebuilt a damaged index ({self.repaired}): " if self.repaired else ""
        return (f"{repaired}added {self.added}, updated {self.updated}, removed {self.removed}, "
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
        host, port, https = server_address(settings.chroma_url)
        try:
            client = chromadb.HttpClient(host=host, port=port, ssl=https, settings=chroma_settings)
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
    except OSError:
        raise _not_writable(settings) from None
    if not all(os.access(p, os.W_OK) for p in (path, path / "chroma.sqlite3") if p.exists()):
        raise _not_writable(settings)
    try:
        client = chromadb.PersistentClient(path=str(path), settings=chroma_settings)
        client.list_collections()
    except Exception as exc:
        if "readonly" in str(exc).replace("-", "").lower():
            raise _not_writable(settings) from None
        raise IndexError_(
            f"The Chroma index in {path} cannot be opened ({type(exc).__name__}: {str(exc)[:120]}); "
            "move it away and run `coach index`."
        ) from None
    return client


def server_address(url: str) -> tuple[str, int, bool]:
    """(host, port, https) of a Chroma server URL, which may lack the scheme and the port."""
    parsed = urlparse(url if "://" in url else f"http://{url}")
    return parsed.hostname or "127.0.0.1", parsed.port or 8000, parsed.scheme == "https"


def _not_writable(settings: Settings) -> IndexError_:
    """The index folder (or the data folder it is to be made in) cannot be written: say so, and how to fix it."""
    path = settings.chroma_dir
    where = path if path.exists() else next((p for p in path.parents if p.exists()), path)
    setting = "COACH_CHROMA_PATH" if settings.chroma_path else "COACH_DATA_DIR"
    return IndexError_(f"The index folder {path} is not writable ({where} is read-only for this user): fix its "
                       f"permissions, or set {setting} to a folder you can write to.")


class Index:
    """The active passages collection of one Chroma client, tied to one embedding model.

    `path` is the folder of an embedded index: its files are checked before Chroma reads them (see
    index_check) and fingerprinted after each sync. `server` names a Chroma server (no credentials) for
    messages; its files are the server's to keep.
    """

    note: str | None = None  # what the knowledge watch last did, for the status line (coach.watch)
    writes = 0  # syncs and rebuilds done through this object: a retriever over it reloads at once after one

    def __init__(self, client: Any, embedder: Embedder, prefix: str = "coach", path: Path | None = None,
                 server: str = "") -> None:
        self.client = client
        self.embedder = embedder
        self.prefix = prefix
        self.path = path
        self.server = server
        self._checked: set[tuple[str, str]] = set()  # (collection id, revision) whose files passed the check

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
        """The active collection, checked against the embedding model and its files; raises when there is none."""
        with self._reading():
            active = self._active()
            if active is None:
                raise IndexError_("There is no index yet: run `coach index` (the chat UI builds it on start).")
            self._check_model(active)
            damage = self._damage(active)
        if damage:
            raise self._damaged(damage)
        return active

    def _damage(self, collection: Any) -> str | None:
        """What is wrong with an embedded collection's files (None when they may be read, or for a server)."""
        if self.path is None:
            return None
        key = (str(collection.id), str((collection.metadata or {}).get("revision", "")))
        if key in self._checked:
            return None
        damage = index_check.problem(self.path, key[0])
        if damage is None:
            self._checked.add(key)
        return damage

    def _damaged(self, damage: str) -> IndexDamagedError:
        return IndexDamagedError(f"The index in {self.path} is damaged ({damage}); run `coach index` to rebuild it.")

    def _record(self, collection: Any) -> None:
        """Fingerprint the collection's files as this sync left them (embedded indexes only)."""
        self.writes += 1
        if self.path is not None:
            keep = {str(c.id) for c in self._candidates()}
            index_check.record(self.path, str(collection.id), keep)

    @contextmanager
    def _reading(self) -> Iterator[None]:
        """Chroma's own exceptions while reading, as one message saying where the index is and what to do."""
        try:
            yield
        except CoachError:
            raise
        except Exception as exc:
            what = f"{type(exc).__name__}: {str(exc)[:120]}"
            if self.path is not None:
                raise IndexDamagedError(
                    f"The index in {self.path} could not be read ({what}); run `coach index` to rebuild it.") from None
            try:
                self.client.heartbeat()
            except Exception:
                raise IndexUnreachableError(
                    f"The index server (Chroma at {self.server}) is unreachable ({type(exc).__name__}): answers "
                    "need it; start it again, or unset COACH_CHROMA_URL to use an index on this machine."
                ) from None
            raise IndexError_(f"The index server (Chroma at {self.server}) failed ({what}).") from None

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
        damage = self._damage(collection)
        if damage:  # repaired, not reported as unchanged: the damaged collection is never read
            report = self.rebuild(chunks, progress)
            report.repaired = damage
            return report
        report = self._apply(collection, chunks, progress)
        self._record(collection)
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
        self._record(fresh)
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
    def _on_active(self, work: Callable[[Any], T]) -> T:
        """work(active collection), once more on the new active one when a rebuild removed it meanwhile (the
        old index stays usable while a rebuild runs; only its removal at the switch can fall between the two)."""
        collection = self.collection()
        try:
            with self._reading():
                return work(collection)
        except IndexDamagedError:
            if collection.name in {c.name for c in self._candidates()}:
                raise
        collection = self.collection()
        with self._reading():
            return work(collection)

    def all_passages(self) -> tuple[str, list[str], list[str], list[dict[str, Any]]]:
        """(collection name, ids, documents, metadatas) of every passage."""
        def read(collection: Any) -> tuple[str, list[str], list[str], list[dict[str, Any]]]:
            got = collection.get(include=["documents", "metadatas"])
            return collection.name, list(got["ids"]), list(got["documents"] or []), [
                dict(m or {}) for m in (got["metadatas"] or [])]

        return self._on_active(read)

    def query(self, text: str, n: int, role: str | None = None) -> list[Hit]:
        """The n passages nearest to text by the embedding model, with cosine similarity; of one role if given."""
        vector = self.embedder.embed_query(text)
        where: Any = {"role": role} if role is not None else None
        res = self._on_active(lambda collection: collection.query(
            query_embeddings=[vector], n_results=max(1, n), where=where,
            include=["documents", "metadatas", "distances"]))
        hits = []
        for cid, doc, meta, dist in zip(res["ids"][0], (res["documents"] or [[]])[0],
                                        (res["metadatas"] or [[]])[0], (res["distances"] or [[]])[0], strict=True):
            # Default space is squared L2; on unit vectors it maps to cosine as 1 - d/2.
            hits.append(Hit(cid, doc or "", dict(meta or {}), 1.0 - float(dist) / 2.0))
        return hits

    def revision(self) -> tuple[str, str, int]:
        """Changes whenever the active index's content changes: (collection, revision, count)."""
        return self._on_active(lambda collection: (
            collection.name, str((collection.metadata or {}).get("revision", "")), collection.count()))

    def count(self) -> int:
        """Passages in the active index (0 when there is none); raises when it cannot be read."""
        with self._reading():
            active = self._active()
            damage = self._damage(active) if active is not None else None
        if damage:
            raise self._damaged(damage)
        with self._reading():
            return int(active.count()) if active is not None else 0


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
    if settings.chroma_url:
        host, port, https = server_address(settings.chroma_url)
        where = f"{'https' if https else 'http'}://{host}:{port}"
        return Index(connect(settings), embedder, settings.collection, server=where)
    return Index(connect(settings), embedder, settings.collection, path=settings.chroma_dir)


def default_embedder(settings: Settings) -> Embedder:
    """The real offline embedding model from the models folder."""
    from coach.embeddings import MiniLMEmbeddings

    return MiniLMEmbeddings(Path(settings.models_dir))
