"""The Chroma index with the fake embedder: incremental sync, safe rebuild, model check, clear errors."""

from __future__ import annotations

import socket
import uuid
from pathlib import Path
from typing import Any

import pytest
from helpers import free_port

from coach import knowledge, store
from coach.config import Settings
from coach.embeddings import FakeEmbeddings
from coach.errors import IndexError_
from coach.knowledge import Chunk
from coach.store import Index, connect, open_index

SALARY = "06-salary-ranges-us-market-2024.md"


class CountingEmbedder:
    """Wraps an embedder, records every embed_documents call, and can fail on the n-th one."""

    def __init__(self, inner: Any, fail_on_call: int | None = None) -> None:
        self.inner = inner
        self.model_id = inner.model_id
        self.dimension = inner.dimension
        self.fail_on_call = fail_on_call
        self.calls: list[list[str]] = []

    @property
    def embedded(self) -> list[str]:
        return [t for call in self.calls for t in call]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.calls.append(list(texts))
        if self.fail_on_call is not None and len(self.calls) >= self.fail_on_call:
            raise RuntimeError("embedding model crashed")
        return list(self.inner.embed_documents(texts))

    def embed_query(self, text: str) -> list[float]:
        return list(self.inner.embed_query(text))


class OtherFake(FakeEmbeddings):
    model_id = "another-model"


def _chunks(settings: Settings) -> list[Chunk]:
    return knowledge.load(Path(settings.knowledge_dir), settings.chunk_max_words).chunks


@pytest.fixture(params=["embedded", pytest.param("server", marks=pytest.mark.integration)])
def settings(request: pytest.FixtureRequest, tmp_settings: Settings) -> Settings:
    """The tmp settings, with the index embedded on disk or on the shared `chroma run` server."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    if request.param == "server":
        url = request.getfixturevalue("chroma_server")
        return tmp_settings.model_copy(update={"chroma_url": url, "collection": prefix})
    return tmp_settings.model_copy(update={"collection": prefix})


def _texts(index: Index) -> dict[str, str]:
    _, ids, docs, _ = index.all_passages()
    return dict(zip(ids, docs, strict=True))


# -- incremental sync ---------------------------------------------------------------------------
def test_first_sync_adds_everything(settings: Settings, fake_embedder: FakeEmbeddings) -> None:
    chunks = _chunks(settings)
    embedder = CountingEmbedder(fake_embedder)
    index = open_index(settings, embedder)
    assert not index.exists() and index.count() == 0
    report = index.sync(chunks, progress=False)
    assert (report.added, report.updated, report.removed, report.unchanged) == (len(chunks), 0, 0, 0)
    assert sorted(embedder.embedded) == sorted(c.embed_text for c in chunks)
    assert index.count() == len(chunks)
    assert _texts(index) == {c.id: c.text for c in chunks}
    summary = report.summary()
    for word in ("added", "updated", "removed", "unchanged", "s", "chunks/s"):
        assert word in summary
    _, _, _, metas = index.all_passages()
    assert all({"role", "section", "subsection", "source", "heading_path", "hash"} <= set(m) for m in metas)


def test_second_sync_embeds_nothing(settings: Settings, fake_embedder: FakeEmbeddings) -> None:
    chunks = _chunks(settings)
    open_index(settings, fake_embedder).sync(chunks, progress=False)
    # A new connection, as a second `coach index` run would make.
    embedder = CountingEmbedder(fake_embedder)
    report = open_index(settings, embedder).sync(_chunks(settings), progress=False)
    assert embedder.calls == []
    assert (report.added, report.updated, report.removed, report.unchanged) == (0, 0, 0, len(chunks))
    assert "added 0" in report.summary()


def test_editing_a_file_reembeds_only_its_changed_chunk(settings: Settings, fake_embedder: FakeEmbeddings) -> None:
    index = open_index(settings, fake_embedder)
    index.sync(_chunks(settings), progress=False)
    path = Path(settings.knowledge_dir) / SALARY
    path.write_text(path.read_text().replace("Extended parental leave", "Extended family leave"))
    chunks = _chunks(settings)
    embedder = CountingEmbedder(fake_embedder)
    report = open_index(settings, embedder).sync(chunks, progress=False)
    assert (report.added, report.updated, report.removed, report.unchanged) == (0, 1, 0, len(chunks) - 1)
    assert len(embedder.embedded) == 1 and "Extended family leave" in embedder.embedded[0]
    texts = _texts(index)
    assert sum("Extended family leave" in t for t in texts.values()) == 1
    assert not any("Extended parental leave" in t for t in texts.values())
    assert index.count() == len(chunks)


def test_adding_a_file_adds_only_its_chunks(settings: Settings, fake_embedder: FakeEmbeddings) -> None:
    index = open_index(settings, fake_embedder)
    before = _chunks(settings)
    index.sync(before, progress=False)
    (Path(settings.knowledge_dir) / "11-extra.md").write_text(
        "---\nrole: Data Scientist\n---\n\n# Extra\n\n## Tools\n\n- Notebooks and SQL.\n")
    embedder = CountingEmbedder(fake_embedder)
    report = open_index(settings, embedder).sync(_chunks(settings), progress=False)
    assert (report.added, report.updated, report.removed, report.unchanged) == (1, 0, 0, len(before))
    assert len(embedder.embedded) == 1 and "Notebooks and SQL" in embedder.embedded[0]
    hits = index.query("Notebooks and SQL", 1)
    assert hits[0].metadata["source"] == "11-extra.md"
    assert hits[0].metadata["role"] == "Data Scientist"


def test_deleting_a_file_removes_its_chunks(settings: Settings, fake_embedder: FakeEmbeddings) -> None:
    index = open_index(settings, fake_embedder)
    before = _chunks(settings)
    index.sync(before, progress=False)
    gone = [c for c in before if c.source == SALARY]
    assert gone
    (Path(settings.knowledge_dir) / SALARY).unlink()
    embedder = CountingEmbedder(fake_embedder)
    report = open_index(settings, embedder).sync(_chunks(settings), progress=False)
    assert embedder.calls == []
    assert (report.added, report.updated, report.removed) == (0, 0, len(gone))
    assert report.unchanged == len(before) - len(gone)
    _, _, _, metas = index.all_passages()
    assert not any(m["source"] == SALARY for m in metas)
    assert index.count() == len(before) - len(gone)


# -- rebuild --------------------------------------------------------------------------------------
def test_failed_rebuild_leaves_the_previous_index_usable(
    settings: Settings, fake_embedder: FakeEmbeddings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store, "_max_batch", lambda client: 5)  # many batches, so a failure is part-way
    old_chunks = _chunks(settings)
    assert len(old_chunks) > 10
    index = open_index(settings, fake_embedder)
    index.rebuild(old_chunks, progress=False)
    old_texts = _texts(index)

    path = Path(settings.knowledge_dir) / SALARY
    path.write_text(path.read_text().replace("Entry Level: $150,000 - $180,000", "Entry Level: $1 - $2"))
    failing = CountingEmbedder(fake_embedder, fail_on_call=2)
    with pytest.raises(RuntimeError):
        open_index(settings, failing).rebuild(_chunks(settings), progress=False)
    assert len(failing.calls) == 2  # it did fail part-way, after one batch was stored

    survivor = open_index(settings, fake_embedder)
    assert survivor.exists()
    assert survivor.count() == len(old_chunks)
    assert _texts(survivor) == old_texts
    base = next(c for c in old_chunks if c.subsection == "Base Salary")
    hits = survivor.query(base.embed_text, 1)
    assert hits[0].id == base.id and "Entry Level: $150,000 - $180,000" in hits[0].text
    # An incremental sync still works on the surviving index ...
    report = survivor.sync(_chunks(settings), progress=False)
    assert report.updated == 1
    # ... and the next successful rebuild leaves exactly one collection, with the new text.
    survivor.rebuild(_chunks(settings), progress=False)
    names = [c if isinstance(c, str) else c.name for c in survivor.client.list_collections()]
    assert len([n for n in names if n.startswith(settings.collection + "-")]) == 1
    assert any("Entry Level: $1 - $2" in t for t in _texts(survivor).values())


def test_rebuild_replaces_the_content(settings: Settings, fake_embedder: FakeEmbeddings) -> None:
    index = open_index(settings, fake_embedder)
    index.sync(_chunks(settings), progress=False)
    (Path(settings.knowledge_dir) / SALARY).unlink()
    chunks = _chunks(settings)
    report = index.rebuild(chunks, progress=False)
    assert report.added == len(chunks)
    assert index.count() == len(chunks)
    assert not any(c.source == SALARY for c in chunks)


# -- the index belongs to one embedding model ----------------------------------------------------
@pytest.mark.parametrize("other", [OtherFake(64), FakeEmbeddings(32)], ids=["other-model", "other-dimension"])
def test_another_embedding_model_is_refused(settings: Settings, fake_embedder: FakeEmbeddings, other: Any) -> None:
    chunks = _chunks(settings)
    open_index(settings, fake_embedder).sync(chunks, progress=False)
    wrong = open_index(settings, other)
    with pytest.raises(IndexError_) as err:
        wrong.query("base salary", 3)
    assert "--rebuild" in str(err.value)
    with pytest.raises(IndexError_) as err:
        wrong.sync(chunks, progress=False)  # never mixes vectors of two models
    assert "--rebuild" in str(err.value)
    # The original model still reads the untouched index; a rebuild switches models cleanly.
    assert open_index(settings, fake_embedder).query("base salary", 1)
    wrong.rebuild(chunks, progress=False)
    assert wrong.query("base salary", 1)
    with pytest.raises(IndexError_):
        open_index(settings, fake_embedder).query("base salary", 1)


# -- clear errors ---------------------------------------------------------------------------------
def test_query_before_any_index_says_to_run_coach_index(settings: Settings, fake_embedder: FakeEmbeddings) -> None:
    index = open_index(settings, fake_embedder)
    with pytest.raises(IndexError_) as err:
        index.query("base salary", 3)
    assert "coach index" in str(err.value)
    with pytest.raises(IndexError_) as err:
        index.all_passages()
    assert "coach index" in str(err.value)


def test_folder_that_is_not_a_chroma_index(tmp_settings: Settings) -> None:
    folder = Path(tmp_settings.data_dir) / "somewhere"
    folder.mkdir()
    (folder / "notes.txt").write_text("my shopping list")
    (folder / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    with pytest.raises(IndexError_) as err:
        connect(tmp_settings.model_copy(update={"chroma_path": folder}))
    assert "not a Chroma index" in str(err.value)
    assert str(folder) in str(err.value)
    assert (folder / "notes.txt").read_text() == "my shopping list"  # nothing touched


def test_file_instead_of_a_folder(tmp_settings: Settings) -> None:
    path = Path(tmp_settings.data_dir) / "index.db"
    path.write_text("not a folder")
    with pytest.raises(IndexError_) as err:
        connect(tmp_settings.model_copy(update={"chroma_path": path}))
    assert str(path) in str(err.value)


def test_empty_folder_becomes_an_index(tmp_settings: Settings, fake_embedder: FakeEmbeddings) -> None:
    folder = Path(tmp_settings.data_dir) / "fresh"
    folder.mkdir()
    settings = tmp_settings.model_copy(update={"chroma_path": folder})
    open_index(settings, fake_embedder).sync(_chunks(settings), progress=False)
    assert (folder / "chroma.sqlite3").is_file()
    assert open_index(settings, fake_embedder).count() > 0


@pytest.mark.parametrize("url", ["http://127.0.0.1:{port}", "127.0.0.1:{port}"])
def test_unreachable_server_is_a_clear_error(tmp_settings: Settings, url: str) -> None:
    port = free_port()
    with pytest.raises(IndexError_) as err:
        connect(tmp_settings.model_copy(update={"chroma_url": url.format(port=port)}))
    message = str(err.value)
    assert "Cannot reach the Chroma server" in message
    assert str(port) in message
    assert "\n" not in message


# -- the suite's own guard ------------------------------------------------------------------------
def test_network_guard_blocks_off_machine_connections(network_guard: Any) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock, pytest.raises(Exception) as err:
        sock.connect(("192.0.2.1", 80))  # TEST-NET-1: never routed
    assert "off the machine" in str(err.value)
    assert network_guard.attempts == ["('192.0.2.1', 80)"]
    network_guard.attempts.clear()  # this attempt was the point of the test
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        assert sock.connect_ex(("127.0.0.1", free_port())) != 0  # loopback is allowed (and refused)
    assert network_guard.attempts == []


def test_changing_the_role_updates_the_index(tmp_settings: Settings, fake_embedder: FakeEmbeddings) -> None:
    index = open_index(tmp_settings, fake_embedder)
    index.sync(_chunks(tmp_settings), progress=False)
    path = Path(tmp_settings.knowledge_dir) / SALARY
    path.write_text(path.read_text().replace("role: Senior Software Engineering Manager in AI", "role: Data Scientist"))
    report = index.sync(_chunks(tmp_settings), progress=False)
    assert report.updated > 0
    _, _, _, metas = index.all_passages()
    roles = {m["role"] for m in metas if m["source"] == SALARY}
    assert roles == {"Data Scientist"}
