"""Alpaca-format medical QA data (instruction / input / output, as in shibing624/medical): load, validate, render.

Standard library only at import: the parent reads and validates the source when it selects a job's rows
(bench.sweep.selection), and the worker reads that selection and renders it inside each framework's environment with
the same code. Every file is streamed (a JSON array through ijson, Parquet through pyarrow: the parent's).
"""

from __future__ import annotations

import errno
import hashlib
import io
import itertools
import json
import stat
import string
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.core.errors import DataError, SpecError

ASSETS = Path(__file__).resolve().parent.parent / "assets"  # bench/assets
BUNDLED_MEDICAL = ASSETS / "medical"
REQUIRED_FIELDS = ("instruction", "output")
ON_BAD_ROW = ("error", "skip")
CHAT = "chat"  # dataset.prompt_format: the model's chat template
FORMAT_FIELDS = ("instruction", "input", "output")
HELDOUT_OVERLAP_WARN = 0.05  # share of held-out rows also in the training rows above which a run says so
RECALL = "quality is recall"  # how that note begins: the findings put it first


@dataclass(frozen=True)
class Example:
    instruction: str
    input: str
    output: str

    @property
    def user_content(self) -> str:
        # Instruction, then the input on a new line only when present: the way LLaMA-Factory's alpaca
        # converter builds the user turn, so every framework sees the same prompt text.
        return f"{self.instruction}\n{self.input}" if self.input else self.instruction


def resolve_files(path: str | Path, pattern: str) -> list[Path]:
    """A data file, or the files in a directory matching `pattern` (shibing624/medical's layout)."""
    p = Path(path).expanduser()
    if p.is_file():
        return [p.resolve()]
    if p.is_dir():
        files = sorted(f.resolve() for f in p.glob(pattern) if f.is_file())
        if not files:
            raise DataError(f"{p}: no files match {pattern!r}")
        return files
    raise DataError(f"{p}: {what_is(p)}")


def what_is(p: Path) -> str:
    """Why `p` is not a data file or directory, in words: missing, a symlink loop, a FIFO, a device..."""
    try:
        mode = p.stat().st_mode
    except FileNotFoundError:
        return "dataset file not found" if not p.is_symlink() else "dataset file not found (a broken symlink)"
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "a symlink loop, not a dataset file"
        return f"cannot be read ({e.strerror})"
    kinds = [(stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device")]  # fmt: skip
    kind = next((name for test, name in kinds if test(mode)), "not a regular file")
    return f"{kind}, not a dataset file"


class BadRow(DataError):
    """One row that cannot be used; `kind` names the problem for the skip counts (dataset.on_bad_row=skip)."""

    def __init__(self, where: str, kind: str, detail: str = ""):
        super().__init__(f"{where}: {kind}{detail}")
        self.kind = kind


@dataclass
class LoadCounts:
    """What loading did to the rows: how many were read and kept, and why the others were left out."""

    rows: int = 0
    kept: int = 0
    duplicates: int = 0  # exact repeats of an earlier row: counted and left out
    skipped: dict[str, int] = field(default_factory=dict)  # bad rows by problem (on_bad_row=skip)

    def skip(self, kind: str) -> None:
        self.skipped[kind] = self.skipped.get(kind, 0) + 1


ROW_JSON_FACTOR = 6  # a row's JSON text is at most this many bytes per byte of its fields (\u00XX escapes)
ROW_JSON_SLACK = 64 << 10  # keys, punctuation and fields the harness does not read


class _Hashed(io.RawIOBase):
    """A file read once, front to back, feeding every byte to `hasher` on the way: the identity of a source
    is the hash of exactly the bytes its rows were read from. `limit`: bytes allowed since `mark` (one row)."""

    def __init__(self, path: Path, hasher=None):
        self._file = open(path, "rb", buffering=0)  # noqa: SIM115 (closed by close())
        self._hasher, self.pos, self.mark, self.limit = hasher, 0, 0, None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self.limit is not None and self.pos - self.mark > self.limit:
            raise RowTooLarge(self.pos - self.mark)
        n = self._file.readinto(buffer)
        if n and self._hasher is not None:
            self._hasher.update(memoryview(buffer)[:n])
        self.pos += n or 0
        return n

    def close(self) -> None:
        self._file.close()
        super().close()


class RowTooLarge(Exception):
    """A JSON array element still open after more bytes than a row may take (raised from inside the parser)."""


def row_json_limit(max_row_bytes: int | None) -> int | None:
    """The most bytes one row's JSON text may take before the row is called too large without parsing it."""
    return None if max_row_bytes is None else max_row_bytes * ROW_JSON_FACTOR + ROW_JSON_SLACK


class Reader:
    """One data file's rows, streamed: (row number, parsed row) pairs of a JSON Lines file (.json or .jsonl),
    a JSON array or a Parquet file; memory does not grow with the file. A row that cannot be parsed comes as a
    BadRow in its place; a file that cannot be read at all raises DataError. With `hasher`, every byte of the
    file is fed to it: `drain()` reads what is left after the last row taken."""

    def __init__(self, path: Path, hasher=None, max_row_bytes: int | None = None):
        self.path, self.hasher, self.limit = path, hasher, row_json_limit(max_row_bytes)
        self._raw: _Hashed | None = None
        self._file = None

    def __enter__(self) -> Reader:
        if self.path.suffix == ".parquet":
            if self.hasher is not None:  # pyarrow reads a Parquet file out of order (footer first): hashed apart
                with _open(self.path) as raw:
                    for chunk in iter(lambda: raw.read(1 << 20), b""):
                        self.hasher.update(chunk)
            return self
        self._raw = _open(self.path, self.hasher)
        self._file = io.BufferedReader(self._raw, 1 << 20)
        return self

    def __exit__(self, *exc) -> None:
        if self._file is not None:
            self._file.close()

    def __iter__(self) -> Iterator[tuple[int, object]]:
        f = self._file
        if f is None:
            return _parquet_rows(self.path)
        head = f.peek(1 << 16).lstrip()
        if not head and not f.read(1 << 16).strip():
            raise DataError(f"{self.path}: file is empty")
        if head.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte order mark, as some editors write
            f.read(3)
            head = head[3:].lstrip()
        if head.startswith(b"["):
            return _array_rows(self.path, f, self._raw, self.limit)
        return _lines(self.path, f, self.limit)

    def drain(self) -> None:
        """Read the rest of the file into the hash: the source's identity covers all of it."""
        if self._file is not None and self.hasher is not None:
            for _ in iter(lambda: self._file.read(1 << 20), b""):
                pass


def _open(path: Path, hasher=None) -> _Hashed:
    try:
        return _Hashed(path, hasher)
    except FileNotFoundError:
        raise DataError(f"{path}: dataset file not found") from None
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror or e})") from None


def _lines(path: Path, f, limit: int | None) -> Iterator[tuple[int, object]]:
    lineno = 0
    while line := f.readline(-1 if limit is None else limit + 1):
        lineno += 1
        where = f"{path}:{lineno}"
        if limit is not None and len(line) > limit and not line.endswith(b"\n"):
            yield lineno, BadRow(where, "row larger than dataset.max_row_bytes", f" (its line is over {limit:,} bytes)")
            while (rest := f.readline(1 << 20)) and not rest.endswith(b"\n"):  # on_bad_row=skip: passed, not kept
                pass
            continue
        if not line.strip():
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            yield lineno, BadRow(where, "not UTF-8 text", f" (byte {e.start} of the line); save it as UTF-8")
            continue
        try:
            yield lineno, json.loads(text)
        except json.JSONDecodeError as e:
            cut = "" if line.endswith(b"\n") else "; the last line has no newline: is the file truncated?"
            yield lineno, BadRow(where, f"not valid JSON ({e.msg})", cut)


def _array_rows(path: Path, f, raw: _Hashed, limit: int | None) -> Iterator[tuple[int, object]]:
    """The elements of a JSON array, one at a time (ijson: a streaming parser), each bounded in size."""
    import ijson

    row, raw.limit = 0, limit
    try:
        for row, item in enumerate(ijson.items(f, "item", use_float=True), start=1):
            yield row, item
            raw.mark = raw.pos
    except RowTooLarge as e:
        raise DataError(f"{path}: row {row + 1}: row larger than dataset.max_row_bytes (over {e.args[0]:,} bytes of "
                        "JSON); set dataset.max_row_bytes=<larger>, or convert the file to JSON Lines "
                        "(one row a line), where such a row can be skipped") from None  # fmt: skip
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: row {row + 1}: not UTF-8 text ({e.reason}); save the file as UTF-8") from None
    except ijson.JSONError as e:
        detail = str(e).splitlines()[0][:200]
        raise DataError(f"{path}: row {row + 1}: not valid JSON ({detail}); is the file truncated?") from None


def _parquet_rows(path: Path) -> Iterator[tuple[int, object]]:
    """A Parquet file's rows, a batch at a time (row group by row group), only the columns the harness reads."""
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
        columns = [c for c in FORMAT_FIELDS if c in table.schema_arrow.names]
        row = 0
        for batch in table.iter_batches(batch_size=4096, columns=columns):
            for item in batch.to_pylist():
                row += 1
                yield row, item
    except FileNotFoundError:
        raise DataError(f"{path}: dataset file not found") from None
    except (OSError, ValueError) as e:  # pyarrow raises its own subtypes for damaged files
        raise DataError(f"{path}: not a readable Parquet file ({e})") from None


def _example(where: str, row: object, max_row_bytes: int | None = None) -> Example:
    if isinstance(row, BadRow):
        raise row
    if not isinstance(row, dict):
        raise BadRow(where, f"row is a {type(row).__name__}, expected an object with instruction/input/output")
    for key in REQUIRED_FIELDS:
        if key not in row:
            raise BadRow(where, f"field {key!r} is missing")
    values = {}
    for key in ("instruction", "input", "output"):
        value = row.get(key, "")
        if value is None and key == "input":
            value = ""
        if not isinstance(value, str):
            raise BadRow(where, f"field {key!r} is {type(value).__name__}, expected a string")
        if key in REQUIRED_FIELDS and not value.strip():
            raise BadRow(where, f"field {key!r} is empty")
        values[key] = value
    size = sum(len(v.encode("utf-8")) for v in values.values())
    if max_row_bytes is not None and size > max_row_bytes:  # one giant row would take minutes and gigabytes
        raise BadRow(where, "row larger than dataset.max_row_bytes", f" ({size:,} > {max_row_bytes:,} bytes)")
    return Example(**values)


def digest(example: Example) -> bytes:
    """A row's identity (16 bytes): exact duplicates and held-out overlap are found by it, not by keeping rows."""
    text = "\0".join((example.instruction, example.input, example.output))
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def usable_rows(
    path: Path, on_bad_row: str, report: LoadCounts, max_row_bytes: int | None = None, hasher=None
) -> Iterator[Example]:
    """The rows of one file that validate, in order, duplicates included; each row read is counted in `report`.
    A bad row raises DataError naming file, row and field, or with on_bad_row="skip" is counted and left out.
    With `hasher`, the whole file's bytes go to it (Reader), also when the caller stops early."""
    if on_bad_row not in ON_BAD_ROW:
        raise DataError(f"dataset.on_bad_row={on_bad_row!r}: expected one of {ON_BAD_ROW}")
    with Reader(path, hasher, max_row_bytes) as reader:
        try:
            for number, row in reader:
                report.rows += 1
                try:
                    yield _example(f"{path}:{number}", row, max_row_bytes)
                except BadRow as bad:
                    if on_bad_row == "error":
                        fix = "set dataset.max_row_bytes=<larger>, or " if "max_row_bytes" in bad.kind else ""
                        skip = "to leave such rows out and count them: dataset.on_bad_row=skip"
                        raise DataError(f"{bad}; {fix}{skip}") from None
                    report.skip(bad.kind)
        except GeneratorExit:  # the caller has the rows it needs
            reader.drain()
            raise
        reader.drain()


def load_examples(
    files: list[Path] | tuple[str, ...],
    max_rows: int | None = None,
    on_bad_row: str = "error",
    report: LoadCounts | None = None,
    max_row_bytes: int | None = None,
) -> list[Example]:
    """The first `max_rows` usable rows of `files` (all of them with None), validated, in order; reading stops
    once there are enough. Exact duplicates of an earlier row are counted in `report` and left out."""
    report = report if report is not None else LoadCounts()
    rows = itertools.chain.from_iterable(usable_rows(Path(f), on_bad_row, report, max_row_bytes) for f in files)
    examples = [ex for ex, _ in itertools.islice(distinct(rows, report), max_rows)]
    report.kept = len(examples)
    return examples


def distinct(rows: Iterable[Example], report: LoadCounts) -> Iterator[tuple[Example, bytes]]:
    """Each row with its digest, exact repeats of an earlier row counted in `report` and left out."""
    seen: set[bytes] = set()
    for ex in rows:
        key = digest(ex)
        if key in seen:
            report.duplicates += 1
            continue
        seen.add(key)
        yield ex, key


def heldout_note(counts: dict) -> str | None:
    """A warning when too many held-out rows are training rows (`counts`: the summary's data.heldout)."""
    if counts["kept"] and counts["overlap_with_train"] / counts["kept"] > HELDOUT_OVERLAP_WARN:
        return f"{RECALL}: {counts['overlap_with_train']} of {counts['kept']} held-out rows are also training rows"
    return None


@dataclass(frozen=True)
class PlainFormat:
    """A plain prompt format (`### Question: {instruction}\n### Answer: {output}`): the prompt is the text
    before {output}, the answer {output} (and the EOS token with `eos`). Spaces right before {output} go with
    the answer, as a BPE tokenizer attaches a leading space to the next word: cut there, the prompt tokenizes
    the same alone and inside the row, so every framework's split of prompt and answer is the same."""

    template: str
    eos: bool

    def prompt(self, example: Example) -> str:
        head = self.template[: -len("{output}")]
        return head.rstrip(" \t").format(instruction=example.instruction, input=example.input)

    def completion(self, example: Example, eos_token: str | None) -> str:
        head = self.template[: -len("{output}")]
        space = head[len(head.rstrip(" \t")) :]
        return space + example.output + (eos_token or "" if self.eos else "")


def format_fields(template: str) -> list[str]:
    """The fields a prompt format names; a field is a bare name ({instruction}), with no format spec or
    conversion: `{instruction:>99999999}` would pad every prompt to gigabytes."""
    try:
        parsed = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(template) if name is not None]
    except ValueError as e:
        raise SpecError(f"dataset.prompt_format={template!r}: not a format string ({e})") from None
    for name, spec, conversion in parsed:
        if spec or conversion:
            field = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            what = "a conversion" if conversion else "a format spec"
            bare = "{" + name + "}"
            raise SpecError(f"dataset.prompt_format={template!r}: {field} has {what}; a field is the bare name: {bare}")
    return [name for name, _, _ in parsed]


def plain_format(dataset) -> PlainFormat | None:
    """The job's plain prompt format (`dataset`: its DatasetSpec), or None when it trains in the chat format."""
    return None if dataset.prompt_format == CHAT else PlainFormat(dataset.prompt_format, dataset.eos)


def check_prompt_format(dataset, loss_on: str) -> PlainFormat | None:
    """dataset.prompt_format checked before any run: `chat`, or a format string over instruction / input /
    output ending with {output}. Returns the plain format, None for chat."""
    template = dataset.prompt_format
    if template == CHAT:
        if dataset.eos:
            raise SpecError("dataset.eos=true: the chat template ends the answer itself; eos applies to plain formats")
        return None
    where = f"dataset.prompt_format={template!r}"
    fields = format_fields(template)
    unknown = [f for f in fields if f not in FORMAT_FIELDS]
    if unknown:
        known = "{instruction}, {input}, {output}"
        raise SpecError(f"{where}: unknown field {{{unknown[0]}}}; a format knows {known}")
    if "output" not in fields:
        raise SpecError(f"{where}: no {{output}} field, so no answer to train on")
    if fields.count("output") > 1 or not template.endswith("{output}"):
        raise SpecError(f"{where}: must end with {{output}} (the answer is what follows the prompt), once")
    plain = PlainFormat(template, dataset.eos)
    if loss_on == "answer" and not template[: -len("{output}")].strip():
        raise SpecError(
            f"{where}: nothing before {{output}}, so no prompt apart from the answer; train.loss_on=answer needs "
            "one (or set train.loss_on=all)"
        )
    return plain


def to_conversation(example: Example, system_prompt: str) -> dict[str, list[dict[str, str]]]:
    """A conversational prompt/completion pair: system + user turn as the prompt, the answer as completion."""
    return {
        "prompt": [
            {"role": "system", "content": system_prompt},
            {"role": "user", "content": example.user_content},
        ],
        "completion": [{"role": "assistant", "content": example.output}],
    }


def prompt_text(tokenizer, example: Example, dataset) -> str:
    """What a model is asked, as text: the chat template's prompt (with the generation prompt), or the plain
    format's prompt. Evaluation generates from it."""
    plain = plain_format(dataset)
    if plain is not None:
        return plain.prompt(example)
    messages = to_conversation(example, dataset.system_prompt)["prompt"]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def tokenize_example(tokenizer, example: Example, dataset, max_len: int | None) -> dict:
    """One example tokenized by the harness in the job's prompt format: ids and the answer mask (strict mode
    trains on these, evaluation scores the answer with them)."""
    plain = plain_format(dataset)
    if plain is None:
        return tokenize_conversation(tokenizer, to_conversation(example, dataset.system_prompt), max_len)
    prompt = plain.prompt(example)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    ids = tokenizer(prompt + plain.completion(example, tokenizer.eos_token), add_special_tokens=False)["input_ids"]
    if ids[: len(prompt_ids)] != prompt_ids:
        raise DataError(
            f"dataset.prompt_format={plain.template!r}: the prompt's last tokens merge with the answer's first "
            f"({prompt[-20:]!r}); end the prompt part on a token boundary"
        )
    mask = [0] * len(prompt_ids) + [1] * (len(ids) - len(prompt_ids))
    cut = len(ids) if max_len is None else max_len
    return {"input_ids": ids[:cut], "completion_mask": mask[:cut]}


def tokenize_conversation(tokenizer, conversation: dict[str, list[dict[str, str]]], max_len: int | None) -> dict:
    """One example tokenized by the harness itself: ids and a completion mask (strict mode trains on these).

    Renders with the tokenizer's chat template, then cuts the end past `max_len` (None: no cut).
    """
    prompt = tokenizer.apply_chat_template(conversation["prompt"], tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(conversation["prompt"] + conversation["completion"], tokenize=False)
    if not full.startswith(prompt):
        raise DataError("the chat template does not render the prompt as a prefix of the conversation")
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    ids = tokenizer(full, add_special_tokens=False)["input_ids"]
    if ids[: len(prompt_ids)] != prompt_ids:
        raise DataError("the prompt tokenizes differently alone and inside the conversation")
    mask = [0] * len(prompt_ids) + [1] * (len(ids) - len(prompt_ids))
    if max_len is not None:
        ids, mask = ids[:max_len], mask[:max_len]
    return {"input_ids": ids, "completion_mask": mask}
