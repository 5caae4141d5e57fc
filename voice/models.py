"""The model registry: a name -> where its weights come from, tried in order.

Entries live in ``models/*.toml`` (one file per kind of model). Each entry has ``sources``:

- ``{type = "path", path = "..."}``: a local file or folder;
- ``{type = "package", module = "pkg", path = "sub/dir"}``: files shipped inside an installed
  Python package (found without importing it);
- ``{type = "assemble", files = [{name = "model.bin", parts = [{module, path}, ...]}, ...]}``:
  several package files concatenated once into the cache, checked against ``sha256``;
- ``{type = "requantize", model = "base-name", file = "out.gguf", types = {Q5_0 = "Q4_0"}}``: the
  GGUF of another registry model with tensors of those types requantized once into the cache
  (:mod:`voice.requant`: types llama.cpp has fast CPU kernels for);
- ``{type = "hub", repo = "org/name", file = "optional.gguf"}``: a Hugging Face hub id, used
  from the local hub cache, and downloaded only when ``general.allow_download`` is on.

An entry may list ``aliases``: other names people type for it (faster-whisper's ``tiny.en``,
Piper's ``en_US-joe-medium``). Names and aliases match case-insensitively; an unknown name is an
error that lists the close matches.

A name that is not in the registry but is an existing path is used as that path.
"""

from __future__ import annotations

import contextlib
import difflib
import fcntl
import hashlib
import importlib.util
import os
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voice.errors import ConfigError, ModelNotAvailable


def default_registry_dir() -> Path:
    """``models/`` beside the package (source checkout), or inside it (installed wheel)."""
    here = Path(__file__).resolve().parent
    for cand in (here.parent / "models", here / "models"):
        if cand.is_dir():
            return cand
    return here.parent / "models"


@dataclass(frozen=True)
class Part:
    module: str
    path: str


@dataclass(frozen=True)
class AssembledFile:
    name: str
    parts: tuple[Part, ...]
    sha256: str | None = None


@dataclass(frozen=True)
class Source:
    type: str
    path: str | None = None
    module: str | None = None
    repo: str | None = None
    file: str | None = None
    files: tuple[AssembledFile, ...] = ()
    #: requantize: the registry model it is made from, and tensor type -> new type.
    model: str | None = None
    types: tuple[tuple[str, str], ...] = ()

    def describe(self) -> str:
        if self.type == "path":
            return f"path {self.path}"
        if self.type == "package":
            return f"package module {self.module}/{self.path or ''}".rstrip("/")
        if self.type == "assemble":
            mods = sorted({p.module for f in self.files for p in f.parts})
            return f"assembled from {', '.join(mods)}"
        if self.type == "requantize":
            return f"requantized from {self.model} ({', '.join(f'{a} to {b}' for a, b in self.types)})"
        return f"hub {self.repo}" + (f" ({self.file})" if self.file else "")


@dataclass(frozen=True)
class ModelEntry:
    """One named model: what it is, where it can come from, how to install it."""

    name: str
    kind: str
    description: str = ""
    #: "dir" (a folder of files) or "file" (one file, such as a GGUF or ONNX voice).
    layout: str = "dir"
    #: Pip packages that ship the weights; used in the "how to install" message.
    packages: tuple[str, ...] = ()
    install: str | None = None
    license: str | None = None
    sources: tuple[Source, ...] = ()
    #: Other names for this model (e.g. faster-whisper's own "tiny.en").
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class Resolved:
    """Where a model loads from now."""

    name: str
    path: Path
    source: str


@dataclass
class Availability:
    entry: ModelEntry
    available: bool
    source: str
    path: Path | None
    size_bytes: int | None
    note: str = ""


def _module_dir(module: str) -> Path | None:
    """The folder of an installed package, without importing it (no import side effects)."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    if spec.origin:
        return Path(spec.origin).parent
    return None


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _parse_aliases(raw: Any, where: str) -> tuple[str, ...]:
    if not isinstance(raw, list) or not all(isinstance(a, str) and a.strip() for a in raw):
        raise ConfigError(f"{where}: aliases must be a list of names")
    return tuple(raw)


def _name_index(entries: dict[str, ModelEntry]) -> dict[str, str]:
    """Lower-cased names and aliases -> registry name; one name may not mean two models."""
    index: dict[str, str] = {}
    for entry in entries.values():
        for n in (entry.name, *entry.aliases):
            key = n.strip().lower()
            if index.get(key, entry.name) != entry.name:
                raise ConfigError(f"model registry: '{n}' names both {index[key]} and {entry.name}")
            index[key] = entry.name
    return index


def _parse_source(raw: dict[str, Any], where: str) -> Source:
    kind = raw.get("type")
    if kind not in {"path", "package", "assemble", "requantize", "hub"}:
        raise ConfigError(f"{where}: source type {kind!r} is not path, package, assemble, requantize or hub")
    types = raw.get("types", {})
    if kind == "requantize" and not (raw.get("model") and raw.get("file") and isinstance(types, dict) and types):
        raise ConfigError(f"{where}: a requantize source needs model, file and types (e.g. {{Q5_0 = \"Q4_0\"}})")
    try:
        files = tuple(
            AssembledFile(
                name=f["name"],
                parts=tuple(Part(p["module"], p["path"]) for p in f["parts"]),
                sha256=f.get("sha256"),
            )
            for f in raw.get("files", [])
        )
    except (KeyError, TypeError) as e:
        raise ConfigError(f"{where}: each assembled file needs name and parts (module, path): missing {e}") from None
    return Source(
        type=kind,
        path=raw.get("path"),
        module=raw.get("module"),
        repo=raw.get("repo"),
        file=raw.get("file"),
        files=files,
        model=raw.get("model"),
        types=tuple((str(a), str(b)) for a, b in types.items()) if isinstance(types, dict) else (),
    )


@dataclass
class Registry:
    """Named models loaded from ``models/*.toml``; resolution is lazy and cheap."""

    cache_dir: Path
    allow_download: bool = False
    registry_dir: Path = field(default_factory=default_registry_dir)
    _entries: dict[str, ModelEntry] | None = None
    #: Lower-cased name or alias -> registry name.
    _names: dict[str, str] | None = None

    # ---------------------------------------------------------------- entries
    def entries(self) -> dict[str, ModelEntry]:
        if self._entries is None:
            entries: dict[str, ModelEntry] = {}
            for toml_path in sorted(self.registry_dir.glob("*.toml")):
                try:
                    with toml_path.open("rb") as fh:
                        data = tomllib.load(fh)
                except (OSError, tomllib.TOMLDecodeError) as e:
                    raise ConfigError(f"model registry {toml_path}: {e}") from None
                models = data.get("models", {})
                if not isinstance(models, dict):
                    raise ConfigError(f"model registry {toml_path}: [models] must be a table of named models")
                for name, raw in models.items():
                    where = f"{toml_path}: models.{name}"
                    if not isinstance(raw, dict):
                        raise ConfigError(f"{where}: must be a table (kind, description, sources, ...)")
                    entries[name] = ModelEntry(
                        name=name,
                        kind=raw.get("kind", "other"),
                        description=raw.get("description", ""),
                        layout=raw.get("layout", "dir"),
                        packages=tuple(raw.get("packages", [])),
                        install=raw.get("install"),
                        license=raw.get("license"),
                        sources=tuple(_parse_source(s, where) for s in raw.get("sources", [])),
                        aliases=_parse_aliases(raw.get("aliases", []), where),
                    )
            self._names = _name_index(entries)
            self._entries = entries
        return self._entries

    def canonical(self, name: str) -> str | None:
        """The registry name for ``name`` (a name or an alias, any case), or None."""
        self.entries()
        assert self._names is not None
        return self._names.get(name.strip().lower())

    def entry(self, name: str, kind: str | None = None) -> ModelEntry:
        """The entry for a name or alias; an unknown name lists the close matches (of ``kind``)."""
        canonical = self.canonical(name)
        if canonical is not None:
            return self.entries()[canonical]
        raise ConfigError(self._unknown_message(name, kind))

    def _unknown_message(self, name: str, kind: str | None) -> str:
        entries = [e for e in self.entries().values() if kind is None or e.kind == kind]
        typed = {n.lower(): e.name for e in entries for n in (e.name, *e.aliases)}
        spelled = {n.lower(): n for e in entries for n in (e.name, *e.aliases)}
        close: list[str] = []  # the closest spelling of each model, at most three models
        for match in difflib.get_close_matches(name.strip().lower(), list(typed), n=9, cutoff=0.6):
            if typed[match] not in (typed[c] for c in close) and len(close) < 3:
                close.append(match)
        known = ", ".join(
            e.name + (f" ({', '.join(e.aliases)})" if e.aliases else "") for e in sorted(entries, key=lambda e: e.name)
        ) or "none"
        if close:
            return (
                f"unknown model '{name}': did you mean {' or '.join(spelled[c] for c in close)}?"
                " (`voice models` lists every name)"
            )
        return f"unknown model '{name}': not in the registry and not an existing path (known: {known})"

    def names(self, kind: str | None = None) -> list[str]:
        return sorted(n for n, e in self.entries().items() if kind is None or e.kind == kind)

    # ---------------------------------------------------------------- resolving
    def resolve(self, name_or_path: str, *, kind: str | None = None, progress: bool = True) -> Resolved:
        """A local path for the model, assembling or downloading once if needed.

        Raises ``ModelNotAvailable`` with install advice when no source works, and
        ``ConfigError`` for a name that is neither registered nor a path.
        """
        if self.canonical(name_or_path) is None:
            p = Path(name_or_path).expanduser()
            if p.exists():
                return Resolved(name_or_path, p.resolve(), f"path {p}")
        entry = self.entry(name_or_path, kind)  # an unknown name: the error lists close matches
        if kind is not None and entry.kind != kind:
            raise ConfigError(f"model '{entry.name}' is a {entry.kind} model, not a {kind} model")
        tried: list[str] = []
        for src in entry.sources:
            path = self._try(entry, src, progress=progress, materialize=True)
            if path is not None:
                return Resolved(entry.name, path, src.describe())
            tried.append(src.describe())
        raise ModelNotAvailable(self._missing_message(entry, tried))

    def availability(self, name: str) -> Availability:
        """Where ``name`` would load from, without assembling or downloading anything."""
        entry = self.entry(name)
        for src in entry.sources:
            path = self._try(entry, src, progress=False, materialize=False)
            if path is not None:
                note = ""
                size: int | None
                if src.type == "assemble" and not self._assembled_dir(entry).exists():
                    note = "assembled into the cache on first use"
                    size = sum(
                        _size(p) for f in src.files for p in self._part_paths(f) if p is not None
                    )
                elif src.type == "requantize" and not path.exists():
                    note, size = f"requantized from {src.model} into the cache on first use", None
                else:
                    size = _size(path) if path.exists() else None
                return Availability(entry, True, src.describe(), path, size, note)
        return Availability(entry, False, "-", None, None, self._install_hint(entry))

    def _missing_message(self, entry: ModelEntry, tried: list[str]) -> str:
        tried_s = "; ".join(tried) if tried else "no sources"
        return f"model '{entry.name}' is not available (tried {tried_s}); {self._install_hint(entry)}"

    def _install_hint(self, entry: ModelEntry) -> str:
        if entry.install:
            return entry.install
        if entry.packages:
            return "install it with: pip install " + " ".join(entry.packages)
        hub = [s.repo for s in entry.sources if s.type == "hub"]
        if hub:
            return f"download {hub[0]} with general.allow_download = true, or give a local path"
        return "put its files in place and give the path"

    def _try(self, entry: ModelEntry, src: Source, *, progress: bool, materialize: bool) -> Path | None:
        if src.type == "path":
            p = Path(src.path or "").expanduser()
            return p if src.path and p.exists() else None
        if src.type == "package":
            base = _module_dir(src.module or "")
            if base is None:
                return None
            p = base / (src.path or "")
            return p if p.exists() else None
        if src.type == "assemble":
            if not all(p is not None and p.exists() for f in src.files for p in self._part_paths(f)):
                return None
            target = self._assembled_dir(entry)
            if not materialize:
                return target if entry.layout == "dir" else target / src.files[0].name
            self._assemble(entry, src, target, progress=progress)
            return target if entry.layout == "dir" else target / src.files[0].name
        if src.type == "requantize":
            return self._requantized(entry, src, progress=progress, materialize=materialize)
        if src.type == "hub":
            return self._hub(src, download=materialize and self.allow_download)
        return None

    def _requantized(self, entry: ModelEntry, src: Source, *, progress: bool, materialize: bool) -> Path | None:
        """The derived GGUF in the cache, made from its base model once (locked, atomic)."""
        target = self._assembled_dir(entry) / (src.file or "model.gguf")
        if target.exists():
            return target
        base = self.entry(src.model or "")
        found = next((p for s in base.sources if (p := self._try(base, s, progress=progress, materialize=False))),
                     None)
        if found is None:
            return None
        if not materialize:
            return target
        base_path = self.resolve(base.name, progress=progress).path
        target.parent.mkdir(parents=True, exist_ok=True)
        with _file_lock(target.parent.parent / f".{entry.name}.lock"):
            if not target.exists():
                from voice.requant import requantize

                with _progress(_size(base_path), f"requantizing {base.name}", enabled=progress) as advance:
                    requantize(base_path, target, dict(src.types), progress=advance)
        return target

    # ---------------------------------------------------------------- assembling
    def _part_paths(self, f: AssembledFile) -> list[Path | None]:
        out: list[Path | None] = []
        for part in f.parts:
            base = _module_dir(part.module)
            out.append(None if base is None else base / part.path)
        return out

    def _assembled_dir(self, entry: ModelEntry) -> Path:
        return self.cache_dir / "models" / entry.name

    def _assemble(self, entry: ModelEntry, src: Source, target: Path, *, progress: bool) -> None:
        """Concatenate parts into ``target`` once; safe when several processes race."""
        done = target / ".complete"
        if done.exists():
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        with _file_lock(target.parent / f".{entry.name}.lock"):
            if done.exists():
                return
            target.mkdir(parents=True, exist_ok=True)
            total = sum(_size(p) for f in src.files for p in self._part_paths(f) if p is not None)
            with _progress(total, f"assembling {entry.name}", enabled=progress) as advance:
                for f in src.files:
                    self._assemble_file(f, target, advance)
            done.write_text("ok\n")

    def _assemble_file(self, f: AssembledFile, target: Path, advance: Any) -> None:
        out = target / f.name
        tmp = out.with_name(out.name + ".partial")
        digest = hashlib.sha256()
        with tmp.open("wb") as dst:
            for part in self._part_paths(f):
                assert part is not None
                with part.open("rb") as src:
                    while chunk := src.read(1 << 22):
                        dst.write(chunk)
                        digest.update(chunk)
                        advance(len(chunk))
            dst.flush()
            os.fsync(dst.fileno())
        actual = digest.hexdigest()
        if f.sha256 and actual != f.sha256:
            tmp.unlink(missing_ok=True)
            raise ModelNotAvailable(
                f"assembled {f.name} has sha256 {actual[:12]}…, expected {f.sha256[:12]}…;"
                " the installed parts are damaged or of another version: reinstall them"
            )
        os.replace(tmp, out)
        (target / (f.name + ".sha256")).write_text(f"{actual}  {f.name}\n")

    # ---------------------------------------------------------------- hub
    def _hub(self, src: Source, *, download: bool) -> Path | None:
        try:
            import huggingface_hub
        except ImportError:
            return None
        kwargs: dict[str, Any] = {"repo_id": src.repo, "local_files_only": not download}
        try:
            if src.file:
                return Path(huggingface_hub.hf_hub_download(filename=src.file, **kwargs))
            return Path(huggingface_hub.snapshot_download(**kwargs))
        except Exception:  # noqa: BLE001 - any hub failure means "not available from here"
            return None


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextlib.contextmanager
def _progress(total: int, desc: str, *, enabled: bool) -> Iterator[Any]:
    if not enabled:
        yield lambda n: None
        return
    from tqdm import tqdm

    with tqdm(total=total, desc=desc, unit="B", unit_scale=True, file=sys.stderr, leave=False) as bar:
        yield bar.update


def registry_for(cfg: Any) -> Registry:
    """The registry configured by a :class:`voice.config.Config`."""
    return Registry(cache_dir=cfg.cache_dir(), allow_download=cfg.general.allow_download)
