"""Alpaca-format medical QA data (instruction / input / output, as in shibing624/medical): load, validate, render.

Standard library only: the parent validates data before a sweep starts, and the worker renders it inside
each framework's environment with the same code.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import random
import stat
import string
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.errors import DataError, SpecError

ASSETS = Path(__file__).parent / "assets"
BUNDLED_MEDICAL = ASSETS / "medical"
REQUIRED_FIELDS = ("instruction", "output")
ON_BAD_ROW = ("error", "skip")
CHAT = "chat"  # dataset.prompt_format: the model's chat template
FORMAT_FIELDS = ("instruction", "input", "output")
HELDOUT_OVERLAP_WARN = 0.05  # share of held-out rows also in the training rows above which a run says so


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
class DataReport:
    """What loading did to the rows: how many were read and kept, and why the others were left out."""

    rows: int = 0
    kept: int = 0
    duplicates: int = 0  # exact repeats of an earlier row: counted and left out
    skipped: dict[str, int] = field(default_factory=dict)  # bad rows by problem (on_bad_row=skip)

    def skip(self, kind: str) -> None:
        self.skipped[kind] = self.skipped.get(kind, 0) + 1


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: dataset file not found") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start}); save it as UTF-8") from None


def _parse(path: Path) -> Iterator[tuple[int, object]]:
    """(line or row number, parsed row) pairs of a JSON array, JSON Lines (either extension) or Parquet file.
    A JSON Lines line that does not parse comes as a BadRow in place of its row."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            rows = pq.read_table(path).to_pylist()
        except FileNotFoundError:
            raise DataError(f"{path}: dataset file not found") from None
        except Exception as e:  # pyarrow raises its own types for damaged files
            raise DataError(f"{path}: not a readable Parquet file ({e})") from None
        yield from enumerate(rows, start=1)
        return
    text = _read_text(path)
    stripped = text.lstrip()
    if not stripped:
        raise DataError(f"{path}: file is empty")
    if stripped.startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{e.lineno}: not valid JSON ({e.msg}); is the file truncated?") from None
        yield from enumerate(rows, start=1)
        return
    for lineno, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as e:
                yield lineno, BadRow(f"{path}:{lineno}", f"not valid JSON ({e.msg})")


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


def load_examples(
    files: list[Path] | tuple[str, ...],
    max_rows: int | None = None,
    on_bad_row: str = "error",
    shuffle_seed: int | None = None,
    report: DataReport | None = None,
    max_row_bytes: int | None = None,
) -> list[Example]:
    """The usable rows of `files`, validated, in order (or shuffled with `shuffle_seed`), at most `max_rows`.

    A bad row raises BadRow naming file, line and field, or with on_bad_row="skip" is counted in `report`
    and left out. Exact duplicates of an earlier row are always counted and left out.
    """
    if on_bad_row not in ON_BAD_ROW:
        raise DataError(f"dataset.on_bad_row={on_bad_row!r}: expected one of {ON_BAD_ROW}")
    report = report if report is not None else DataReport()
    examples: list[Example] = []
    seen: set[Example] = set()
    enough = shuffle_seed is None and max_rows is not None  # unshuffled: stop reading once there are enough
    for f in map(Path, files):
        for lineno, row in _parse(f):
            report.rows += 1
            try:
                ex = _example(f"{f}:{lineno}", row, max_row_bytes)
            except BadRow as bad:
                if on_bad_row == "error":
                    fix = "set dataset.max_row_bytes=<larger>, or " if "max_row_bytes" in bad.kind else ""
                    skip = "to leave such rows out and count them: dataset.on_bad_row=skip"
                    raise DataError(f"{bad}; {fix}{skip}") from None
                report.skip(bad.kind)
                continue
            if ex in seen:
                report.duplicates += 1
                continue
            seen.add(ex)
            examples.append(ex)
            if enough and len(examples) >= max_rows:
                report.kept = len(examples)
                return examples
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(examples)
    examples = examples[:max_rows] if max_rows is not None else examples
    report.kept = len(examples)
    return examples


def snapshot(path: Path, store: Path) -> Path:
    """A read-only copy of a data file under `store`, named by its content: a run reads exactly the bytes its
    job key names, whatever happens to the original while the sweep runs. Written once per content."""
    tmp = store / f".{path.name}.{os.getpid()}.tmp"
    try:
        copy = store / _sha256(path)[:16] / path.name
        if copy.is_file():
            return copy
        store.mkdir(parents=True, exist_ok=True)
        h = hashlib.sha256()
        with open(path, "rb") as src, open(tmp, "wb") as dst:
            for chunk in iter(lambda: src.read(1 << 20), b""):
                h.update(chunk)
                dst.write(chunk)
        copy = store / h.hexdigest()[:16] / path.name  # the bytes copied, should the file have changed meanwhile
        copy.parent.mkdir(exist_ok=True)
        os.chmod(tmp, 0o444)
        os.replace(tmp, copy)
        return copy
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise DataError(f"{path}: cannot copy it for the run into {store} ({e.strerror or e})") from None


@contextlib.contextmanager
def named_by_source(dataset):
    """Errors about rows name the user's file (`dataset`: the DatasetSpec's source_files), not the copy read."""
    try:
        yield
    except DataError as e:
        text = str(e)
        for copy, source in zip((*dataset.train_files, *dataset.eval_files), dataset.source_files, strict=True):
            text = text.replace(copy, source)
        raise DataError(text) from None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def files_sha256(*groups: list[Path] | tuple[str, ...]) -> str:
    """SHA-256 of the files' contents, group by group (train, then held-out): the data's identity."""
    h = hashlib.sha256()
    for files in groups:
        h.update(b"G")
        for f in files:
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
            h.update(b"F")
    return h.hexdigest()


def heldout_overlap(train: list[Example], held_out: list[Example]) -> int:
    """Held-out rows that also appear, verbatim, among the training rows: quality measured on them is recall."""
    seen = set(train)
    return sum(ex in seen for ex in held_out)


def heldout_note(counts: dict) -> str | None:
    """A warning when too many held-out rows are training rows (`counts`: the summary's data.heldout)."""
    if counts["kept"] and counts["overlap_with_train"] / counts["kept"] > HELDOUT_OVERLAP_WARN:
        return (f"held-out: {counts['overlap_with_train']} of {counts['kept']} rows are also training rows; "
                "quality measured on them is recall")  # fmt: skip
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
    try:
        return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as e:
        raise SpecError(f"dataset.prompt_format={template!r}: not a format string ({e})") from None


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
