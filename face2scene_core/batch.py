"""Resumable gallery runs: plan and check everything first, then restore photo by photo under a lock.

A run has three phases, so that mistakes cost nothing:

1. :func:`plan_run` checks paths before any model loads: the input exists, the output is not the input
   (an output folder inside the input folder is left out of the inputs), the output folder is writable,
   every reference folder has readable images. It lists the photos (subfolders included, their structure
   kept in the output) and the output name each one wants.
2. :class:`Journal` opens the run's JSON-lines report (``face2scene_report.jsonl`` in the output folder, or
   ``<output stem>.report.jsonl`` beside a single output) and locks it: a second run into the same output
   is refused with a clear message instead of restoring the same photos twice. Stale temporary files of a
   killed run are removed.
3. :func:`run_plan` restores each photo not already done. Each photo gets one line as soon as it finishes
   (flushed to disk), so a killed run leaves a valid record; the same command run again skips finished
   photos and ends with exactly one output per input. Output names are claimed with an exclusive link
   (``name.ext``, else ``name_1.ext``...), recorded in the journal before the file appears, so nothing is
   ever overwritten and an interrupted claim is recognised as this run's own file. Any error of one photo
   (unreadable file, no face, out of memory, a permission problem, a bug) is caught, reported in one line,
   and the run goes on.

Journal lines (``event``): ``run`` (options, photo count), ``claim`` (input, output name), ``photo``
(result or error, the pipeline's report, seconds), ``summary`` (counts at the end of a run).
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import os
import re
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from .errors import Face2SceneError, InputImageError, OutputPathError, ReferenceImageError
from .imageio import (FORMAT_OF_SUFFIX, IMAGE_SUFFIXES, TEMP_PATTERN, candidate_names, clean_stale_temps,
                      encode_photo, link_exclusive, list_images, load_photo, write_temp)

log = logging.getLogger(__name__)

JOURNAL_NAME = "face2scene_report.jsonl"
OUTPUT_FORMATS = ("same", "png", "jpg", "webp", "tiff")
_NAME_RE = re.compile(r"^[\w][\w .\-]*$")


@dataclass
class Person:
    """Clean reference photos of one person: ``name`` (empty for a plain ``--refs DIR``), the files and
    their pixels (``uint8 (H, W, 3)``, read during planning)."""

    name: str
    path: Path
    files: list[Path]
    arrays: list[np.ndarray] = field(default_factory=list, repr=False)

    @property
    def label(self) -> str:
        return self.name or self.path.name


@dataclass
class Job:
    """One photo: ``src``, ``rel`` (its path inside the input folder), ``dest`` (the name it asks for) and
    ``key`` (input path, size, modification time and run options: what makes a finished result reusable)."""

    src: Path
    rel: str
    dest: Path
    key: str


@dataclass
class RunPlan:
    """Everything decided before models load (see :func:`plan_run`)."""

    input: Path
    out_root: Path
    is_folder: bool
    jobs: list[Job]
    journal: Path
    people: list[Person]
    options: dict
    excluded: list[str]
    largest: tuple[int, int, str] | None = None  # (width, height, file) of the largest photo


def parse_refs(values: list[str] | str | os.PathLike | None) -> list[Person]:
    """``--refs`` values: ``DIR`` (one person) or ``NAME=DIR`` (repeatable: several people); a file is one
    reference photo. Every reference is read now, so a bad one stops the run before models load."""
    if values is None:
        return []
    if isinstance(values, (str, os.PathLike)):
        values = [os.fspath(values)]
    people: list[Person] = []
    for value in values:
        name, path = "", Path(value)
        if "=" in value and not path.exists():
            name, raw = value.split("=", 1)
            name, path = name.strip(), Path(raw)
            if not _NAME_RE.match(name):
                raise ReferenceImageError(f"--refs '{value}': the person's name '{name}' must be letters, digits, "
                                          "spaces, '.', '-' or '_' (e.g. --refs anna=refs/anna).")
        if not path.exists():
            raise ReferenceImageError(f"reference folder '{path}' not found. Pass --refs DIR or --refs NAME=DIR "
                                      "with clean photos of the person.")
        files = list_images(path) if path.is_dir() else [path]
        if not files:
            raise ReferenceImageError(f"no reference images ({', '.join(IMAGE_SUFFIXES)}) in '{path}'. "
                                      "Put clean photos of the person there.")
        arrays = []
        for f in files:
            try:
                arrays.append(load_photo(f).rgb)
            except InputImageError as exc:
                raise ReferenceImageError(f"reference '{f}' cannot be used: {exc} Remove it or replace it.") from exc
        people.append(Person(name=name, path=path, files=files, arrays=arrays))
    labels = [p.label for p in people]
    if len(people) > 1 and (any(not p.name for p in people) or len(set(labels)) != len(labels)):
        raise ReferenceImageError(f"several --refs need a distinct NAME each (NAME=DIR), got {labels}.")
    return people


def _suffix_for(src: Path, fmt: str) -> str:
    if fmt == "same":
        return src.suffix if src.suffix.lower() in FORMAT_OF_SUFFIX else ".png"
    return {"png": ".png", "jpg": ".jpg", "webp": ".webp", "tiff": ".tif"}[fmt]


def _check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = write_temp(folder, ".face2scene-write-check", b"")
        probe.unlink()
    except OSError as exc:
        raise OutputPathError(f"cannot write into the output folder '{folder}' ({exc.strerror or exc}). "
                              "Choose a folder you can write to with -o.") from exc


def _options_key(options: dict) -> str:
    return hashlib.sha1(json.dumps(options, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _job_key(src: Path, rel: str, opt_key: str) -> str:
    st = src.stat()
    return f"{rel}|{st.st_size}|{st.st_mtime_ns}|{opt_key}"


def _largest(files: list[Path]) -> tuple[int, int, str] | None:
    from PIL import Image

    best = None
    for f in files:
        try:
            with Image.open(f) as im:
                w, h = im.size
        except Exception:  # unreadable files fail later, one line each
            continue
        if best is None or w * h > best[0] * best[1]:
            best = (w, h, str(f))
    return best


def plan_run(input_path: str | os.PathLike, output: str | os.PathLike, *, refs=None, fmt: str = "same",
             recursive: bool = True, report: str | os.PathLike | None = None,
             options: dict | None = None) -> RunPlan:
    """Check paths and list the work before any model loads; raises a one-line :class:`Face2SceneError`.

    ``refs``: ``None``, a folder, or ``--refs`` values (:func:`parse_refs`). ``fmt``: output format,
    ``"same"`` keeps each photo's own. ``recursive``: include subfolders (kept in the output).
    ``options``: the restore options; a finished photo is reused only by a run with the same options.
    """
    src_path, out = Path(input_path), Path(output)
    if fmt not in OUTPUT_FORMATS:
        raise InputImageError(f"--format must be one of {OUTPUT_FORMATS}, got {fmt!r}.")
    if not src_path.exists():
        raise InputImageError(f"input not found: '{src_path}'. Check the path (relative to '{Path.cwd()}').")
    people = parse_refs(refs)
    opts = dict(options or {})
    opts["refs"] = {p.label: [str(f.resolve()) for f in p.files] for p in people}
    opts["format"] = fmt
    opt_key = _options_key(opts)
    excluded: list[str] = []
    if src_path.is_dir():
        if out.exists() and not out.is_dir():
            raise OutputPathError(f"the output '{out}' is a file; a folder run needs an output folder (-o DIR).")
        if out.resolve() == src_path.resolve():
            raise OutputPathError(f"the output folder is the input folder '{src_path}': restored photos would mix "
                                  f"with the originals. Choose another folder, e.g. -o '{src_path}_restored'.")
        if out.resolve().is_relative_to(src_path.resolve()):
            excluded.append(str(out))
        files = list_images(src_path, recursive=recursive, exclude=[out])
        if not files:
            raise InputImageError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder '{src_path}'"
                                  f"{'' if recursive else ' (subfolders not searched)'}.")
        out_root = out
        jobs = []
        for f in files:
            rel = f.relative_to(src_path).as_posix()
            dest = out / Path(rel).with_suffix(_suffix_for(f, fmt))
            jobs.append(Job(src=f, rel=rel, dest=dest, key=_job_key(f, rel, opt_key)))
        journal = Path(report) if report else out / JOURNAL_NAME
    else:
        if out.is_dir() or out.suffix == "":
            dest = out / f"{src_path.stem}{_suffix_for(src_path, fmt)}"
        elif out.suffix.lower() not in FORMAT_OF_SUFFIX:
            raise OutputPathError(f"output '{out}' has no image suffix; use one of {', '.join(FORMAT_OF_SUFFIX)}.")
        else:
            dest = out
        if dest.resolve() == src_path.resolve():
            raise OutputPathError(f"output '{dest}' is the input itself; choose another output path.")
        out_root = dest.parent
        jobs = [Job(src=src_path, rel=src_path.name, dest=dest, key=_job_key(src_path, src_path.name, opt_key))]
        journal = Path(report) if report else dest.with_name(f"{dest.stem}.report.jsonl")
    _check_writable(out_root)
    if journal.parent != out_root:
        _check_writable(journal.parent)
    return RunPlan(input=src_path, out_root=out_root, is_folder=src_path.is_dir(), jobs=jobs, journal=journal,
                   people=people, options=opts, excluded=excluded, largest=_largest([j.src for j in jobs]))


# ------------------------------------------------------------------------------------------------ journal
def _try_lock(fh) -> bool:
    try:
        import fcntl
    except ImportError:  # Windows: lock one byte far beyond the data, so readers are not blocked
        import msvcrt

        fh.seek(2**31 - 2)
        try:
            msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        finally:
            fh.seek(0, os.SEEK_END)
        return True
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


class Journal:
    """The run's JSON-lines report, locked for the run's duration (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.records: list[dict] = []
        self._fh = None

    def __enter__(self) -> "Journal":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+b")
        if not _try_lock(fh):
            fh.close()
            pid = next((r.get("pid") for r in reversed(self._read()) if r.get("event") == "run"), None)
            raise OutputPathError(f"another face2scene run{f' (pid {pid})' if pid else ''} is writing into "
                                  f"'{self.path.parent}'. Wait for it to finish, or choose another output (-o).")
        self._fh = fh
        self.records = self._read()
        fh.seek(0, os.SEEK_END)
        if fh.tell() and self._last_byte() != b"\n":
            fh.write(b"\n")  # a line cut by a kill: end it so the next record starts clean
        return self

    def _last_byte(self) -> bytes:
        with open(self.path, "rb") as fh:
            fh.seek(-1, os.SEEK_END)
            return fh.read(1)

    def _read(self) -> list[dict]:
        out = []
        try:
            lines = self.path.read_bytes().splitlines()
        except OSError:
            return out
        for line in lines:
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # the last line of a killed run may be cut
            if isinstance(rec, dict):
                out.append(rec)
        return out

    def write(self, record: dict) -> None:
        assert self._fh is not None, "Journal used outside 'with'"
        self._fh.write(json.dumps(record, default=str).encode() + b"\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self.records.append(record)

    def __exit__(self, *exc) -> None:
        if self._fh is not None:
            self._fh.close()  # closing releases the lock
            self._fh = None

    def state(self) -> tuple[dict[str, str], dict[str, str]]:
        """``(done, claimed)``: input key -> output path of finished photos / of claimed names."""
        done, claimed = {}, {}
        for r in self.records:
            if r.get("event") == "claim":
                claimed[r["key"]] = r["output"]
            elif r.get("event") == "photo" and r.get("ok"):
                done[r["key"]] = r["output"]
        return done, claimed


# ------------------------------------------------------------------------------------------------ the run
class _UsageError(Exception):
    """Carries an error that must stop the run (models or references unusable) past the per-photo catch."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def _one_line_error(exc: BaseException, src: Path) -> str:
    if isinstance(exc, Face2SceneError):
        return str(exc)
    if isinstance(exc, MemoryError) or "out of memory" in str(exc).lower():
        return (f"out of memory restoring '{src.name}'. Try a smaller --tile (e.g. --tile 512), close other "
                "programs, or use --device cpu.")
    if isinstance(exc, PermissionError):
        return f"permission denied ({exc.filename or exc}). Check that the output folder is writable."
    if isinstance(exc, OSError):
        return f"{type(exc).__name__}: {exc}. Check the disk and the file, then rerun the same command."
    return (f"unexpected {type(exc).__name__}: {exc} (a bug; the report has the traceback, please send it). "
            "Rerunning the same command retries this photo.")


def _restore_one(pipe, photo, people: list[Person], kwargs: dict):
    """Restore one :class:`~face2scene_core.imageio.Photo`; with several people, the face that best
    matches any of them drives the restoration (with that person's references)."""
    if len(people) <= 1 or str(kwargs.get("face", "reference")) != "reference":
        person = people[0] if people else None
        res = pipe(photo.rgb, person.arrays if person else [], pixels=photo.deep, **kwargs)
        if person is not None and person.name:
            res.report["person"] = person.name
        return res
    from .faces.select import mean_embedding

    faces = pipe.detect(photo.rgb)
    if not faces:  # the pipeline raises NoFaceError or restores without tokens (--no-face-ok)
        return pipe(photo.rgb, people[0].arrays, pixels=photo.deep, **kwargs)
    emb = pipe.embedder
    face_emb = [emb.embed(photo.rgb, f) for f in faces]
    thr = float(getattr(emb, "match_threshold", 0.0))
    found, best = {}, (-2.0, None, 0)
    for person in people:
        _, ref_emb = pipe.prepare_references(person.arrays, names=[f.name for f in person.files])
        ref = mean_embedding(ref_emb)
        scores = [float(emb.similarity(e, ref)) for e in face_emb]
        i = int(np.argmax(scores))
        found[person.name] = {"face": i, "score": round(scores[i], 4), "match": scores[i] >= thr}
        if scores[i] > best[0]:
            best = (scores[i], person, i)
    score, person, idx = best
    args = {k: v for k, v in kwargs.items() if k != "face"}
    res = pipe(photo.rgb, person.arrays, face=idx, pixels=photo.deep, **args)
    res.report["people"] = found
    res.report["person"] = person.name
    res.report["person_match"] = bool(score >= thr)
    if score < thr:
        res.report["warning"] = (f"no face matches any of {[p.name for p in people]} (best: {person.name} "
                                 f"{score:.3f} < {thr:.2f}); restored with {person.name}'s references")
    return res


def _peak_rss_mb() -> float | None:
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)


def _output_format(dest: Path) -> str:
    return FORMAT_OF_SUFFIX.get(dest.suffix.lower(), "PNG")


def _claim(journal: Journal, job: Job, tmp: Path, first: Path, taken: set[str]) -> Path:
    """Link ``tmp`` to the first free name from ``first`` on, writing the claim to the journal first."""
    for cand in candidate_names(first):
        if str(cand) in taken and str(cand) != str(first):
            continue
        if cand.exists():
            continue
        journal.write({"event": "claim", "key": job.key, "input": str(job.src), "output": str(cand)})
        if link_exclusive(tmp, cand):
            return cand
    raise AssertionError("unreachable")  # pragma: no cover


def _stale_temps(plan: RunPlan) -> list[Path]:
    if plan.is_folder:
        return clean_stale_temps(plan.out_root)
    dest = plan.jobs[0].dest
    mine = re.compile(rf"^\.{re.escape(dest.stem)}(_\d+)?{re.escape(dest.suffix)}\.[A-Za-z0-9_]{{8}}\.tmp$")
    removed = []
    for f in plan.out_root.iterdir():
        if mine.match(f.name) and TEMP_PATTERN.match(f.name) and f.is_file():
            f.unlink()
            removed.append(f)
    return removed


def _needs_work(job: Job, done: dict, claimed: dict) -> str | None:
    """The earlier output of ``job`` if it exists (finished, or claimed before a kill), else ``None``."""
    prev = done.get(job.key) or claimed.get(job.key)
    return prev if prev and Path(prev).is_file() else None


def run_plan(pipe_or_factory, plan: RunPlan, journal: Journal, *,
             on_item: Callable[[dict, int, int, float | None], None] | None = None, workers: int = 0,
             **kwargs: Any) -> dict:
    """Restore every photo of ``plan`` not finished yet; returns the summary (also the journal's last line).

    ``pipe_or_factory``: a :class:`~face2scene_core.pipeline.Face2ScenePipeline`, or a callable building it
    (called only if there is work left). ``on_item(record, index, total, eta_seconds)`` after each photo.
    ``workers``: ``0`` reads, restores and writes one photo after the other; ``1`` or more reads the next
    photo and encodes/writes the previous one in background threads while the model runs (at most one
    photo ahead and one behind, so memory stays bounded). ``kwargs`` go to the pipeline (face, tile_size...).
    """
    from concurrent.futures import ThreadPoolExecutor

    t_run = time.perf_counter()
    removed = _stale_temps(plan)
    done, claimed = journal.state()
    taken = set(claimed.values()) | set(done.values())
    journal.write({"event": "run", "pid": os.getpid(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                   "input": str(plan.input), "output": str(plan.out_root), "photos": len(plan.jobs),
                   "options": plan.options, "excluded": plan.excluded, "workers": workers,
                   "removed_temp_files": [str(f) for f in removed]})
    counts = {"restored": 0, "skipped": 0, "failed": 0}
    total = len(plan.jobs)
    lock = threading.Lock()  # journal, counts, names taken, progress: shared with the writer thread
    work = [(i, job) for i, job in enumerate(plan.jobs, 1) if not _needs_work(job, done, claimed)]
    left = {"n": len(work), "t_first": None}

    def report(rec: dict, i: int) -> None:
        """Journal line + progress for one finished photo (under ``lock``)."""
        peak = _peak_rss_mb()
        if peak is not None:
            rec["peak_rss_mb"] = peak  # the process's peak so far: flat along a gallery if nothing accumulates
        journal.write(rec)
        counts["restored" if rec["ok"] else "failed"] += 1
        left["n"] -= 1
        elapsed = time.perf_counter() - (left["t_first"] or t_run)
        finished = len(work) - left["n"]
        if on_item:
            on_item(rec, i, total, elapsed / finished * left["n"] if finished else None)

    def fail(rec: dict, exc: BaseException, src: Path) -> None:
        rec.update(ok=False, error=_one_line_error(exc, src), error_type=type(exc).__name__)
        if not isinstance(exc, Face2SceneError):
            rec["traceback"] = traceback.format_exc()
            log.debug("%s failed", src, exc_info=True)

    def write(i: int, job: Job, rec: dict, image, photo, prev: str | None, t0: float) -> None:
        try:
            data, notes = encode_photo(image, photo, _output_format(job.dest))
            tmp = write_temp(job.dest.parent, job.dest.name, data)
            try:
                with lock:
                    dest = _claim(journal, job, tmp, Path(prev) if prev else job.dest, taken)
                    taken.add(str(dest))
            finally:
                if tmp.exists():
                    tmp.unlink()
            rec.update(ok=True, output=str(dest), notes=photo.notes + notes)
        except Exception as exc:  # noqa: BLE001 -- a failed save is this photo's failure only
            fail(rec, exc, job.src)
        rec["seconds"] = round(time.perf_counter() - t0, 3)
        with lock:
            report(rec, i)

    for i, job in enumerate(plan.jobs, 1):  # finished by an earlier run: record, say so, skip
        prev = _needs_work(job, done, claimed)
        if prev:
            rec = {"event": "photo", "key": job.key, "input": str(job.src), "ok": True, "output": prev,
                   "skipped": "finished by an earlier run"}
            if job.key not in done:  # the file appeared but the run died before its line: record it now
                journal.write(rec)
            counts["skipped"] += 1
            if on_item:
                on_item(rec, i, total, None)
    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="face2scene-io") if workers > 0 and work else None
    pipe, pending = None, None
    try:
        ahead = pool.submit(load_photo, work[0][1].src) if pool else None
        for n, (i, job) in enumerate(work):
            t0 = time.perf_counter()
            left["t_first"] = left["t_first"] or t0
            prev = done.get(job.key) or claimed.get(job.key)
            rec: dict = {"event": "photo", "key": job.key, "input": str(job.src)}
            photo = res = None
            try:
                try:
                    photo = ahead.result() if pool else load_photo(job.src)
                finally:  # read the next photo while this one is restored
                    if pool and n + 1 < len(work):
                        ahead = pool.submit(load_photo, work[n + 1][1].src)
                if pipe is None:  # models load only for a readable photo; unusable references stop the run
                    try:
                        pipe = pipe_or_factory if hasattr(pipe_or_factory, "restorer") else pipe_or_factory()
                        for person in plan.people:
                            pipe.prepare_references(person.arrays, names=[str(f) for f in person.files])
                    except Exception as exc:
                        raise _UsageError(exc) from exc
                    gc.collect()
                    gc.freeze()  # the models' many objects live to the end: later collections skip them
                res = _restore_one(pipe, photo, plan.people, kwargs)
                rec["report"] = res.report
            except _UsageError as exc:
                raise exc.error
            except Exception as exc:  # noqa: BLE001 -- every photo's failure is reported and the run goes on
                fail(rec, exc, job.src)
                rec["seconds"] = round(time.perf_counter() - t0, 3)
                with lock:
                    report(rec, i)
                continue
            if pending is not None:
                pending.result()  # at most one photo waits to be written
            if pool:
                pending = pool.submit(write, i, job, rec, res.image, photo, prev, t0)
            else:
                write(i, job, rec, res.image, photo, prev, t0)
            photo = res = None  # noqa: F841 -- free the photo before the next one is read
        if pending is not None:
            pending.result()
    finally:
        if pool:
            pool.shutdown(wait=True)
    summary = {"event": "summary", "photos": total, **counts, "seconds": round(time.perf_counter() - t_run, 3),
               "report": str(journal.path)}
    if plan.is_folder:
        from .gallery import ESTIMATES_PLOT, plot_estimates

        try:
            plot = plot_estimates(iter_results(journal.path), plan.out_root / ESTIMATES_PLOT)
            summary["estimates_plot"] = None if plot is None else str(plot)
        except Exception as exc:  # noqa: BLE001 -- a plot never fails a run
            log.warning("estimates plot not written: %s", exc)
    journal.write(summary)
    return summary


def iter_results(journal_path: str | os.PathLike) -> Iterator[dict]:
    """The latest ``photo`` record of each input in a journal (what a reader of the report wants)."""
    latest: dict[str, dict] = {}
    for line in Path(journal_path).read_bytes().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and rec.get("event") == "photo":
            latest[rec["input"]] = rec
    yield from latest.values()


__all__ = ["JOURNAL_NAME", "OUTPUT_FORMATS", "Job", "Journal", "Person", "RunPlan", "iter_results", "parse_refs",
           "plan_run", "run_plan"]
