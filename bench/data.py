"""Alpaca-format medical QA data (instruction / input / output, as in shibing624/medical): load, validate, render.

Standard library only: the parent validates data before a sweep starts, and the worker renders it inside
each framework's environment with the same code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

ASSETS = Path(__file__).parent / "assets"
BUNDLED_MEDICAL = ASSETS / "medical"
REQUIRED_FIELDS = ("instruction", "output")


class DataError(ValueError):
    """Input data that cannot be used; the message names the file, row and field."""


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
    raise DataError(f"{p}: dataset file not found")


def _parse(path: Path) -> list[tuple[int, object]]:
    """(line number, parsed row) pairs from a JSON array or a JSON Lines file (either extension)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: dataset file not found") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start})") from None
    stripped = text.lstrip()
    if not stripped:
        raise DataError(f"{path}: file is empty")
    if stripped.startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
        return [(i + 1, row) for i, row in enumerate(rows)]
    parsed = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            parsed.append((lineno, json.loads(line)))
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
    return parsed


def _example(path: Path, lineno: int, row: object) -> Example:
    where = f"{path}:{lineno}"
    if not isinstance(row, dict):
        raise DataError(f"{where}: row is a {type(row).__name__}, expected an object with instruction/input/output")
    for key in REQUIRED_FIELDS:
        if key not in row:
            raise DataError(f"{where}: field {key!r} is missing")
    values = {}
    for key in ("instruction", "input", "output"):
        value = row.get(key, "")
        if value is None and key == "input":
            value = ""
        if not isinstance(value, str):
            raise DataError(f"{where}: field {key!r} is {type(value).__name__}, expected a string")
        if key in REQUIRED_FIELDS and not value.strip():
            raise DataError(f"{where}: field {key!r} is empty")
        values[key] = value
    return Example(**values)


def load_examples(files: list[Path] | tuple[str, ...], max_rows: int | None = None) -> list[Example]:
    """Every row of `files`, in order, validated; stops after `max_rows` rows when set."""
    examples: list[Example] = []
    for f in map(Path, files):
        for lineno, row in _parse(f):
            examples.append(_example(f, lineno, row))
            if max_rows is not None and len(examples) >= max_rows:
                return examples
    return examples


def to_conversation(example: Example, system_prompt: str) -> dict[str, list[dict[str, str]]]:
    """A conversational prompt/completion pair: system + user turn as the prompt, the answer as completion."""
    return {
        "prompt": [
            {"role": "system", "content": system_prompt},
            {"role": "user", "content": example.user_content},
        ],
        "completion": [{"role": "assistant", "content": example.output}],
    }


def tokenize_conversation(tokenizer, conversation: dict[str, list[dict[str, str]]], max_len: int) -> dict | None:
    """One example tokenized by the harness itself (strict mode): ids and a completion mask.

    Renders with the tokenizer's chat template, then cuts the end past `max_len`; None when no answer token
    is left. Every framework then trains on exactly these ids and this mask.
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
    ids, mask = ids[:max_len], mask[:max_len]
    return {"input_ids": ids, "completion_mask": mask} if any(mask) else None
