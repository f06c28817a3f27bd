"""Output paths: checked before any work, written through temporary siblings.

Every CLI checks its output paths (`--out`, `--json`) before it loads a model, so a typo fails
in a second instead of as a traceback after minutes of quantizing or evaluating. Directories
are assembled in a hidden sibling `.NAME.partial-<pid>-XXXX` and renamed into place; a run that
was killed outright (SIGKILL) leaves one behind, and the next run on the same output removes it.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .errors import P2VitError, writing_to


def _nearest_existing(p: Path) -> Path:
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _check_creatable(path: Path, flag: str, is_dir: bool = False) -> None:
    """The missing part of `path` can be made: its nearest existing ancestor is a writable dir, and
    trying it works (os.access says yes to root on read-only or virtual file systems such as
    /proc): the missing folders (a directory output's own too) are made, a file is created in
    the deepest, and all of it is removed again."""
    shown, path = path, Path(os.path.abspath(path))   # "sub/.." is the folder itself, as the writers' realpath sees it
    anchor = _nearest_existing(path.parent if path.exists() else path)
    if anchor != path and not anchor.is_dir():
        raise P2VitError(f"{flag} {shown}: {anchor} is a file, not a directory; choose another path")
    if not os.access(anchor, os.W_OK | os.X_OK):
        raise P2VitError(f"{flag} {shown}: cannot write in {anchor} (permission denied); choose another path")
    deepest = path.parent if path.exists() or not is_dir else path
    missing = []
    while not deepest.exists() and deepest != deepest.parent:
        missing.append(deepest)
        deepest = deepest.parent
    made, probe = [], None
    try:
        for d in reversed(missing):
            d.mkdir()
            made.append(d)
        fd, probe = tempfile.mkstemp(prefix=".p2vit-write-check-", dir=made[-1] if made else deepest)
        os.close(fd)
    except OSError as exc:
        raise P2VitError(f"{flag} {shown}: cannot create files in {anchor} ({exc.strerror or exc}); "
                         "choose another path") from None
    finally:
        if probe is not None:
            Path(probe).unlink(missing_ok=True)
        for d in reversed(made):
            try:
                d.rmdir()
            except OSError:
                pass


def _umask() -> int:
    """The process's umask, read without changing it where Linux reports it (os.umask can only be
    read by setting it, which another thread could observe)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


def umask_mode(mode: int) -> int:
    """`mode` less the process's umask: what open() or mkdir() would give, for the files and
    directories that tempfile creates owner-only (0600, 0700) before they are renamed into place."""
    return mode & ~_umask()


def write_atomic(path: str | os.PathLike, write: Callable[[Path], None], durable: bool = False) -> None:
    """Write a file whole or not at all: `write(tmp)` fills a hidden sibling `.NAME.XXXX.tmp`, which
    gets the umask's permissions (not tempfile's 0600) and is renamed onto `path`. A reader never
    sees half a file, and a failure removes the sibling. `durable` also syncs it to disk first (for
    results a resumed run trusts). Missing folders are made: the output check allowed them."""
    path = Path(os.path.realpath(path))   # a symlink's target is written, the link kept
    path.parent.mkdir(parents=True, exist_ok=True)
    # the name's first 200 characters: with the dot and mkstemp's 8 + 4 the temporary stays within NAME_MAX
    fd, name = tempfile.mkstemp(prefix=f".{path.name[:200]}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        with writing_to(path, tmp):   # a full disk may show only at the sync
            write(tmp)
            if durable:
                fd = os.open(tmp, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        os.chmod(tmp, umask_mode(0o666))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str, durable: bool = False) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(text), durable)


IR_FORMAT = "p2vit-ir"   # manifest.json's "format" in a saved IR (quantizer/ir.py)
IR_ENTRIES = ("manifest.json", "params.bin")   # what IR.save writes
# What python -m codegen writes at a build's top level (tests/test_codegen.py checks a fresh build):
# the files a run reads from it, which no output may replace; anything else there (cosim/, a
# --json or --results of the user's) is not the build's.
BUILD_ENTRIES = ("build.json", "params.bin", "ir", "hls", "csim", "golden", "report.md", "report.json", "timings.json")


def _is_saved_ir(directory: Path) -> bool:
    """A directory quantizer's IR.save wrote (its manifest.json names the format)."""
    try:
        manifest = json.loads((directory / "manifest.json").read_text())
    except (OSError, ValueError, UnicodeDecodeError, RecursionError):
        return False
    return isinstance(manifest, dict) and manifest.get("format") == IR_FORMAT


def _is_results_dir(folder: Path) -> bool:
    """Whether a folder is a --results directory (quantizer/results.py): its meta.json names a run's
    kind and identity."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and "kind" in meta and isinstance(meta.get("identity"), dict)


def _check_not_inside_p2vit_output(path: Path, flag: str, anywhere: bool = False) -> None:
    """Outputs leave p2vit builds and saved IRs whole, whichever run they belong to: their files are
    checked against the hashes recorded when they were made, so one written over (build.json,
    ir/manifest.json) leaves a build or IR that no tool opens. An output may not be or lie in one
    of a build's entries (BUILD_ENTRIES) or an IR's files (IR_ENTRIES); a new file or folder beside
    them is fine, and so is a build's cosim/, which cosim.eval --report rewrites. With `anywhere`
    (a build's or an IR's own --out) it may not lie inside a build or IR at all; the build or IR
    itself may be one: it is replaced whole."""
    real = Path(os.path.realpath(path))
    for parent in real.parents:
        if _is_results_dir(parent):
            raise P2VitError(f"{flag} {path} is inside {parent}, the results directory of a sharded run (--results), "
                             "whose files --resume reads; choose another path")
    for parent in reversed(real.parents):   # outermost first: a build's ir/ is named as the build's
        if is_p2vit_build(parent):
            kind, writer, entries = "the build", "python -m codegen", BUILD_ENTRIES
        elif _is_saved_ir(parent):
            kind, writer, entries = "the saved IR", "python -m quantizer", IR_ENTRIES
        else:
            continue
        if anywhere:
            raise P2VitError(f"{flag} {path} is inside {kind} {parent}, whose files only {writer} writes; "
                             "choose another directory")
        if any(_within(real, parent / e) for e in entries):
            raise P2VitError(f"{flag} {path} is part of {kind} {parent}, which only {writer} writes (replacing "
                             f"it would break {kind}); choose another path, e.g. "
                             f"{parent.parent / (parent.name + '-' + real.name)}")
        return


def check_output_file(path: str | os.PathLike, flag: str) -> Path:
    """A file path that can be written (created or replaced) in an existing folder, not onto a p2vit
    build's or IR's own files."""
    path = Path(path)
    _check_not_inside_p2vit_output(path, flag)
    if path.is_dir():
        raise P2VitError(f"{flag} {path} is a directory; give a file name, e.g. {path / 'results.json'}")
    if path.exists() and not path.is_file():   # written through a temporary file and a rename
        raise P2VitError(f"{flag} {path} is not a regular file (a device, FIFO or socket); give a file name")
    if path.exists() and not os.access(path, os.W_OK):
        raise P2VitError(f"{flag} {path} is not writable; choose another path")
    folder = Path(os.path.abspath(path)).parent
    if not folder.exists() and not folder.is_symlink():   # a typo in a folder name must not make a tree of folders
        raise P2VitError(f"{flag} {path}: the folder {folder} does not exist; create it first or choose another path")
    _check_creatable(path, flag)
    return path


def check_output_dir(path: str | os.PathLike, flag: str, anywhere: bool = False) -> Path:
    """A directory path that can be created (or exists as a directory), not one of a p2vit build's
    or IR's own (or, `anywhere`, for a build's or IR's own --out: not inside one at all; see
    _check_not_inside_p2vit_output)."""
    if Path(path) == Path("-"):   # '-', './-', '-/': the Unix convention for stdout, which a directory cannot be
        raise P2VitError(f"{flag} {os.fspath(path)}: the output is a directory, not a stream to standard output; "
                         "give a directory name (an absolute path if you want a folder named '-')")
    path = Path(path)
    _check_not_inside_p2vit_output(path, flag, anywhere)
    if path.is_symlink() and not path.exists():
        raise P2VitError(f"{flag} {path} is a symbolic link to {os.readlink(path)}, which does not exist; create "
                         "that directory or choose another path")
    if path.exists() and not path.is_dir():
        raise P2VitError(f"{flag} {path} exists and is not a directory; choose another path")
    if anywhere and path.is_dir() and os.path.ismount(path):   # install_dir replaces the folder itself
        raise P2VitError(f"{flag} {path} is a mount point, which the run cannot replace with its output; choose a "
                         f"directory inside it, e.g. {path / 'out'}")
    _check_creatable(path, flag, is_dir=True)
    return path


def sha256_of_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 4 MiB pieces."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def is_p2vit_build(directory: str | os.PathLike) -> bool:
    """A directory python -m codegen wrote: its build.json records the hash of its IR (any other
    project's build.json is not ours to protect, nor to replace)."""
    try:
        info = json.loads((Path(directory) / "build.json").read_text())
    except (OSError, ValueError, UnicodeDecodeError, RecursionError):
        return False
    return isinstance(info, dict) and "ir_sha256" in info


def _within(path: Path, other: Path) -> bool:
    return path == other or other in path.parents


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff")   # what an image folder is read for


@dataclass(frozen=True)
class RunInput:
    """A path a run reads, for check_outputs_apart. `named` is how a message names it ("the input
    --data d.npz", "part of the build B (B/ir)"); of an image folder (`images_only`) the run reads
    only the images, so results may go beside them."""
    named: str
    path: object
    images_only: bool = False

    def overwritten_by(self, out: Path) -> bool:
        given = Path(os.path.realpath(self.path))
        return _within(out, given) and (out == given or not self.images_only
                                         or out.suffix.lower() in IMAGE_SUFFIXES)


def inputs_of(flag: str, path) -> list[RunInput]:
    """The RunInput of a path option (MODEL, --weights, --calib, --data; none when not given): a
    file, or a folder of images."""
    if path is None:
        return []
    if Path(path).is_dir():
        return [RunInput(f"{flag} {path}", path, images_only=True)]
    return [RunInput(f"the input {flag} {path}", path)]


WEIGHTS_FILE = "weights file "   # LoadedModel.source of weights read from a file: this, then its absolute path


def weights_file_of(source: str) -> str | None:
    """The weights file a model's source (LoadedModel.source, build.json's model.source) names, or None."""
    return source[len(WEIGHTS_FILE):] if source.startswith(WEIGHTS_FILE) else None


def card_weights_path(card) -> Path | None:
    """The weights file a model card's "weights" field names, relative to the card; None where it
    names none or the card cannot be read (loading it will say why)."""
    if card is None:
        return None
    try:
        weights = json.loads(Path(card).read_text()).get("weights")
    except (OSError, TypeError, ValueError, UnicodeDecodeError, RecursionError, AttributeError):
        return None
    return Path(card).parent / weights if isinstance(weights, str) and weights else None


def card_inputs(flag: str, card, of: str | None = None) -> list[RunInput]:
    """The RunInputs of a model card given as `flag` (or, with `of`, the card of that: "build B"): the
    card, and the weights file its "weights" field names (relative to the card), which a run reads
    through it. A path that is not a file is inputs_of's (none when it does not exist)."""
    if card is None or not Path(card).exists():
        return []
    if not Path(card).is_file():
        return inputs_of(flag, card)
    found = [RunInput(f"the model card {card} of {of}", card)] if of else inputs_of(flag, card)
    if (w := card_weights_path(card)) is not None:
        found.append(RunInput(f"the weights file {w} of the model card {card}", w))
    return found


def check_outputs_apart(outputs: dict[str, object], inputs: list[RunInput]) -> None:
    """No output path is an input or lies in an input directory, or is (or is inside) another output:
    writing it would destroy what the run reads, or what it writes a moment later. `outputs` maps a
    flag to a path; None (not given) and "-" (stdout) are skipped. A re-run replacing its own
    outputs is fine. Paths are compared after following symlinks."""
    outs = [(flag, p, Path(os.path.realpath(p))) for flag, p in outputs.items() if p is not None and str(p) != "-"]
    for flag, p, rp in outs:
        for given in inputs:
            if given.overwritten_by(rp):
                if given.images_only:
                    raise P2VitError(f"{flag} {p} is an image in {given.named}: a run on it would read it as data; "
                                     "choose another path")
                inside = "" if rp == Path(os.path.realpath(given.path)) else "inside "
                raise P2VitError(f"{flag} {p} is {inside}{given.named}; writing it would overwrite what the run "
                                 "reads: choose another path")
    for i, (flag, p, rp) in enumerate(outs):
        for flag2, p2, rp2 in outs[i + 1:]:
            if _within(rp, rp2) or _within(rp2, rp):
                raise P2VitError(f"{flag} {p} and {flag2} {p2} would overwrite each other; give them separate paths")


_PARTIAL = re.compile(r"\.(?P<name>.+)\.partial-(?P<pid>\d+)-[^/]+$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_partials(target: Path) -> list[Path]:
    """Remove `.TARGET.partial-<pid>-*` siblings whose process no longer runs; returns them."""
    parent = target.absolute().parent
    removed = []
    if not parent.is_dir():
        return removed
    for p in parent.glob(f".{target.name}.partial-*"):
        m = _PARTIAL.match(p.name)
        if m and m["name"] == target.name and not _alive(int(m["pid"])):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def partial_dir(target: Path) -> Path:
    """A fresh hidden sibling of `target` to assemble it in (after removing stale ones); through a
    symlink, a sibling of its target, where install_dir puts it."""
    target = Path(os.path.realpath(target))
    target.absolute().parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(target)
    d = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-{os.getpid()}-", dir=target.absolute().parent))
    os.chmod(d, umask_mode(0o777))   # mkdtemp's 0700 would keep the output from colleagues once renamed
    return d


def install_dir(tmp: Path, target: Path) -> None:
    """Rename a directory assembled in partial_dir(target) onto `target`, replacing what is there;
    through a symlink, its target (the link is kept)."""
    target = Path(os.path.realpath(target))
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
