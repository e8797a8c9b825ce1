"""The rows a job trains and is evaluated on, selected from the source files once and kept in the cache.

Parent side. A selection is read from its sources once per (source content, selection settings) and written
as a small dataset named by its own content (`selections/<sha256>/train.jsonl`, `heldout.jsonl`): every run
of every sweep with the same selection reads those files, never the source, so a source that changes later
cannot change a run, and a 1 GB source costs one streaming pass, not one per run.

Cache layout (under cache_dir/data):
    digests/<stat key>       a source file's SHA-256, filed under its path, inode, size, mtime and ctime
    requests/<key>.json      (source digests, settings) -> the selection's hash and its loading counts
    selections/<hash>/       the selected rows, in order (JSON Lines)

A digest is trusted while its file's path, device, inode, size, mtime and ctime are unchanged: any write to
the file moves mtime and ctime, and ctime cannot be set back by a user, so a stale digest is never used.
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import inspect
import itertools
import json
import os
import tempfile
import time
from array import array
from dataclasses import dataclass
from pathlib import Path

from bench.core.data import Example, LoadCounts, digest, distinct, usable_rows
from bench.core.errors import DataError
from bench.core.record import HeldoutCounts

FORMAT = 1  # the selection's files and request entries; a new format selects anew
TRAIN, HELDOUT = "train.jsonl", "heldout.jsonl"


@dataclass(frozen=True)
class Settings:
    """What decides which rows are taken from the source (dataset.*): part of the selection's request key."""

    max_rows: int | None
    shuffle_seed: int | None  # a seeded sample: the max_rows usable rows of smallest keyed hash, in that order
    on_bad_row: str
    max_row_bytes: int


@dataclass
class Selection:
    sha256: str  # the selected rows' content (train, then held-out): the data's identity
    directory: Path
    source_sha256: list[str]  # each source file's content, train files then held-out files
    train: LoadCounts  # what selecting did to the training rows: read, kept, duplicates, skipped
    heldout: HeldoutCounts | None  # the held-out rows' counts and their overlap with the training rows
    source_read: bool  # whether this call read the source (False: the cache answered)
    seconds: float = 0.0  # what selecting took, or finding the selection in the cache

    @property
    def train_file(self) -> Path:
        return self.directory / TRAIN

    @property
    def eval_file(self) -> Path | None:
        return self.directory / HELDOUT if self.heldout is not None else None


def select(store: Path, train: list[Path], heldout: list[Path], settings: Settings) -> Selection:
    """The selection of `settings` over these files: from the cache when it holds one for their content,
    otherwise read from the sources in one streaming pass and written (atomically) for the next run."""
    start = time.perf_counter()
    files = [*train, *heldout]
    stats = [_stat(f) for f in files]
    digests = [_cached_digest(store, s) for s in stats]
    if all(digests) and (found := _lookup(store, _request_key(digests, len(train), settings), digests)):
        return dataclasses.replace(found, seconds=time.perf_counter() - start)
    hashers = [hashlib.sha256() for _ in files]
    picked, train_counts = _pick(train, settings, hashers[: len(train)])
    rows_out, heldout_counts = _heldout(heldout, settings, hashers[len(train) :], {digest(e) for e in picked})
    if not picked:
        skipped = "".join(f", {n} {kind}" for kind, n in train_counts.skipped.items())
        raise DataError(f"0 usable rows in {', '.join(map(str, train))}: {train_counts.rows} read, "
                        f"{train_counts.duplicates} duplicates{skipped}")  # fmt: skip
    digests = [h.hexdigest() for h in hashers]
    for f, before, sha in zip(files, stats, digests, strict=True):
        if _stat(f) != before:
            raise DataError(f"{f}: changed while it was read (its size or modification time moved); run again once "
                            "nothing writes to it")  # fmt: skip
        _remember_digest(store, before, sha)
    found = _write(store, picked, rows_out, train_counts, heldout_counts, digests)
    _write_json(store / "requests" / f"{_request_key(digests, len(train), settings)}.json",
                {"format": FORMAT, "sha256": found.sha256, "train": dataclasses.asdict(train_counts),
                 "heldout": heldout_counts and dataclasses.asdict(heldout_counts)})  # fmt: skip
    return dataclasses.replace(found, seconds=time.perf_counter() - start)


def _pick(files: list[Path], s: Settings, hashers: list) -> tuple[list[Example], LoadCounts]:
    """The training rows: the first max_rows usable ones, reading no further than needed (each file's rest is
    only hashed), or with shuffle_seed a seeded sample over every usable row (keyed_order)."""
    report = LoadCounts()
    if s.shuffle_seed is not None:
        return _sample(files, s, hashers, report), report
    readers = [usable_rows(f, s.on_bad_row, report, s.max_row_bytes, h) for f, h in zip(files, hashers, strict=True)]
    picked = [ex for ex, _ in itertools.islice(distinct(itertools.chain(*readers), report), s.max_rows)]
    for f, hasher, rows in zip(files, hashers, readers, strict=True):
        if inspect.getgeneratorstate(rows) == inspect.GEN_CREATED:
            _hash_whole(f, hasher)  # never read, as the rows were enough: the identity covers it all the same
        rows.close()  # a file read in part: its rest is hashed, not parsed
    report.kept = len(picked)
    return picked, report


def keyed_order(row_digest: bytes, seed: int) -> int:
    """A row's place in the seeded sample: its content's hash keyed by the seed. The same seed orders the same
    rows the same way on every machine, whatever their order in the file or the file's size."""
    key = seed.to_bytes(8, "little", signed=True)
    return int.from_bytes(hashlib.blake2b(row_digest, key=key, digest_size=8).digest(), "little")


def _sample(files: list[Path], s: Settings, hashers: list, report: LoadCounts) -> list[Example]:
    """The max_rows usable rows of smallest keyed_order (every row with max_rows=None), in that order: one pass
    holding max_rows rows. Duplicates are counted over the whole source by an 8-byte digest per row."""
    heap: list[tuple[int, bytes, Example]] = []  # max-heap by negated order: the largest kept is evicted first
    in_heap: set[bytes] = set()
    seen = array("Q")
    for f, hasher in zip(files, hashers, strict=True):
        for ex in usable_rows(f, s.on_bad_row, report, s.max_row_bytes, hasher):
            key = digest(ex)
            seen.append(int.from_bytes(key[:8], "little"))
            if key in in_heap:
                continue
            entry = (-keyed_order(key, s.shuffle_seed), key, ex)
            if s.max_rows is None or len(heap) < s.max_rows:
                heapq.heappush(heap, entry)
            elif entry > heap[0]:
                in_heap.discard(heapq.heappushpop(heap, entry)[1])
            else:
                continue
            in_heap.add(key)
    report.duplicates = len(seen) - _distinct(seen)
    picked = [ex for _, _, ex in sorted(heap, reverse=True)]
    report.kept = len(picked)
    return picked


def _distinct(values: array) -> int:
    import numpy as np  # the parent has it (pandas); a sort of 8-byte ints, not a set of Python objects

    return len(np.unique(np.frombuffer(values, dtype=np.uint64))) if len(values) else 0


def _heldout(
    files: list[Path], s: Settings, hashers: list, train: set[bytes]
) -> tuple[list[Example], HeldoutCounts | None]:
    """Every usable held-out row (duplicates left out), and how many of them are training rows, by digest."""
    if not files:
        return [], None
    report = LoadCounts()
    read = (usable_rows(f, s.on_bad_row, report, s.max_row_bytes, h) for f, h in zip(files, hashers, strict=True))
    kept = list(distinct(itertools.chain.from_iterable(read), report))
    report.kept = len(kept)
    overlap = sum(key in train for _, key in kept)
    return [ex for ex, _ in kept], HeldoutCounts(**dataclasses.asdict(report), overlap_with_train=overlap)


def _hash_whole(path: Path, hasher) -> None:
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            hasher.update(chunk)


def _jsonl(rows: list[Example]) -> bytes:
    return b"".join(json.dumps(dataclasses.asdict(ex), ensure_ascii=False).encode() + b"\n" for ex in rows)


def _write(store: Path, train: list[Example], heldout: list[Example], train_counts: LoadCounts,
           heldout_counts: HeldoutCounts | None, digests: list[str]) -> Selection:  # fmt: skip
    """The selection's files under the name of their content, written to a temporary directory and renamed:
    a selection in the cache is whole or absent."""
    files = {TRAIN: _jsonl(train)} | ({HELDOUT: _jsonl(heldout)} if heldout_counts is not None else {})
    h = hashlib.sha256()
    for name, data in files.items():
        h.update(f"{name}\0{len(data)}\0".encode())
        h.update(data)
    sha = h.hexdigest()
    target = store / "selections" / sha
    if not target.is_dir():
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
            for name, data in files.items():
                (tmp / name).write_bytes(data)
                os.chmod(tmp / name, 0o444)
            try:
                tmp.rename(target)
            except OSError:  # another process wrote the same selection meanwhile: same bytes, keep theirs
                _remove(tmp)
        except OSError as e:
            raise DataError(f"cannot write the data selection into {target.parent} ({e.strerror or e})") from None
    return Selection(sha, target, digests, train_counts, heldout_counts, source_read=True)


def _remove(tmp: Path) -> None:
    for f in tmp.iterdir():
        f.unlink()
    tmp.rmdir()


def _lookup(store: Path, key: str, digests: list[str]) -> Selection | None:
    """The selection a request made before, when its entry and its files are both in the cache."""
    try:
        entry = json.loads((store / "requests" / f"{key}.json").read_text(encoding="utf-8"))
        if entry.get("format") != FORMAT:
            return None
        directory = store / "selections" / entry["sha256"]
        heldout = entry["heldout"] and HeldoutCounts(**entry["heldout"])
        if not (directory / TRAIN).is_file() or (heldout and not (directory / HELDOUT).is_file()):
            return None
        return Selection(entry["sha256"], directory, digests, LoadCounts(**entry["train"]), heldout, source_read=False)
    except (OSError, ValueError, TypeError, KeyError):  # absent or damaged: select again
        return None


def _request_key(digests: list[str], n_train: int, s: Settings) -> str:
    request = {"format": FORMAT, "train": digests[:n_train], "heldout": digests[n_train:], **dataclasses.asdict(s)}
    return hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()


def _stat(path: Path) -> tuple:
    try:
        st = os.stat(path)
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror or e})") from None
    return str(path.resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _digest_file(store: Path, stat: tuple) -> Path:
    return store / "digests" / hashlib.sha256(json.dumps(stat).encode()).hexdigest()


def _cached_digest(store: Path, stat: tuple) -> str | None:
    try:
        text = _digest_file(store, stat).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text if len(text) == 64 else None


def _remember_digest(store: Path, stat: tuple, sha: str) -> None:
    _write_json(_digest_file(store, stat), sha)


def _write_json(path: Path, value) -> None:
    """A small cache entry written whole or not at all; the cache is only a shortcut, so a failure to write
    one costs the next run a reread, never this run."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(value if isinstance(value, str) else json.dumps(value), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass
