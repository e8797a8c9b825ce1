"""Model presets and the locally built models: the tiny offline default and architecture-only presets.

A `random` model is a Qwen2 architecture from a config with seeded random weights and a byte-level BPE
tokenizer trained on the bundled medical sample with Qwen2's own pre-tokenisation pipeline, special tokens
and Qwen2.5's chat template. It is built once into the cache, so every framework loads the very same files.
`build()` runs inside a framework environment (it needs torch/transformers/tokenizers); the rest is stdlib.
The sweep builds it before a run starts (`python -m bench.models PATH CONFIG_JSON` in the framework's
environment), so the one-time build stays out of the run's wall time; each step says what it is doing.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from bench.core.data import ASSETS, BUNDLED_MEDICAL, load_examples
from bench.core.paths import conf_dir
from bench.core.results import safe_name

BUILDER_VERSION = 2  # bump when build() changes what it writes
CORPUS_FILES = (BUNDLED_MEDICAL / "train_zh_0.json",)
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")

# Qwen2's pre-tokenizer split (transformers' Qwen2Tokenizer uses the same pattern).
PRETOKENIZE_REGEX = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""  # noqa: E501

# Qwen2.5-Instruct's chat template, so the tiny tokenizer renders exactly what the real models do.
QWEN25_CHAT_TEMPLATE = (ASSETS / "qwen2.5_chat_template.jinja").read_text(encoding="utf-8")


def build_key(config: dict[str, Any]) -> str:
    """Content key of a built model: builder version, architecture, seed and tokenizer corpus (its files and
    the system prompt from conf/dataset/medical-sample.yaml)."""
    h = hashlib.sha256(json.dumps({"builder": BUILDER_VERSION, "config": config}, sort_keys=True).encode())
    h.update(corpus_system_prompt().encode())
    for f in CORPUS_FILES:
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def built_model_dir(name: str, config: dict[str, Any], root: Path) -> Path:
    """Where a built model lives under the cache `root` (the sweep's cache_dir)."""
    return root / "models" / safe_name(f"{name}-{build_key(config)}")


BUILT_ELSEWHERE = "built elsewhere while this build waited"  # the sweep then records a wait, not a build


def say(message: str) -> None:
    """One line of build progress (the sweep shows it as the build's status; a worker's log keeps it)."""
    print(f"building model: {message}", flush=True)


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"waiting for a build of {path.stem} in progress elsewhere")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_built(path: str | Path, config: dict[str, Any]) -> Path:
    """Build the random-weight model at `path` unless a complete build is already there."""
    out = Path(path)
    done = out / ".complete"
    if done.exists():
        return out
    with _locked(out.with_name(out.name + ".lock")):
        if done.exists():  # another worker built it while we waited
            say(BUILT_ELSEWHERE)
            return out
        if out.exists() and any(out.iterdir()):
            raise FileExistsError(
                f"{out} holds files this harness did not build; refusing to replace them: move them away, "
                "or give the harness another cache: cache_dir=/path/to/cache"
            )
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        say(f"{out.name}: a Qwen2 architecture with seeded random weights and a tokenizer of its own")
        build(config, tmp)
        (tmp / ".complete").write_text("ok\n")
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    return out


def corpus_system_prompt() -> str:
    """The system prompt the bundled sample is rendered with (conf/dataset/medical-sample.yaml, its one place),
    part of the tokenizer's corpus. PyYAML: the harness's dependency, and transformers' in a framework env."""
    import yaml

    text = (conf_dir() / "dataset" / "medical-sample.yaml").read_text(encoding="utf-8")
    return str(yaml.safe_load(text)["system_prompt"])


def corpus_texts(system_prompt: str) -> list[str]:
    texts = [system_prompt]
    for ex in load_examples(list(CORPUS_FILES)):
        texts.extend((ex.instruction, ex.input, ex.output))
    return [t for t in texts if t]


def train_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE tokenizer with Qwen2's normaliser, split regex and special tokens."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False, fuse_unk=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",  # as Qwen2.5-Instruct: generation stops at the end of the assistant turn
        pad_token="<|endoftext|>",
        unk_token=None,
        bos_token=None,
        clean_up_tokenization_spaces=False,
        model_max_length=32768,
    )
    fast.chat_template = QWEN25_CHAT_TEMPLATE
    return fast


def pretrain(model, tokenizer, texts: list[str], steps: int, block: int = 128, batch: int = 16) -> None:
    """A short causal-LM pre-training on the corpus as plain text (no chat format), in place.

    A LoRA adapter on random weights barely moves the loss; a base model that has seen the language
    gives the fine-tuning job the dynamics of a real one: the chat format and answers still to learn.
    """
    import torch

    ids: list[int] = []
    for t in texts:
        ids.extend(tokenizer(t)["input_ids"] + [tokenizer.pad_token_id])
    n = len(ids) // block
    data = torch.tensor(ids[: n * block]).view(n, block)
    optim = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda s: min(1.0, (s + 1) / 20) * (1 - s / steps))
    gen = torch.Generator().manual_seed(0)
    model.train()
    for step in range(steps):
        if step % max(1, steps // 10) == 0:
            say(f"pre-training step {step}/{steps} on the bundled corpus")
        rows = data[torch.randint(0, n, (batch,), generator=gen)].to(model.device)
        loss = model(input_ids=rows, labels=rows).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        sched.step()
        optim.zero_grad(set_to_none=True)
    model.eval()


def build(config: dict[str, Any], out: Path) -> None:
    """Write tokenizer, config and seeded random weights of a Qwen2 causal LM to `out`."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = dict(config)
    seed = cfg.pop("seed")
    dtype = getattr(torch, cfg.pop("dtype", "float32"))
    tokenizer_vocab = cfg.pop("tokenizer_vocab_size")
    pretrain_steps = cfg.pop("pretrain_steps", 0)
    texts = corpus_texts(corpus_system_prompt())
    say(f"training a {tokenizer_vocab}-token BPE tokenizer on {len(texts)} texts of the bundled sample")
    tokenizer = train_tokenizer(texts, tokenizer_vocab)
    if cfg.get("vocab_size") is None:  # tiny model: embedding sized to its tokenizer, padded like Qwen's
        cfg["vocab_size"] = -(-len(tokenizer) // 64) * 64
    if cfg["vocab_size"] < len(tokenizer):
        raise ValueError(f"vocab_size {cfg['vocab_size']} is smaller than the tokenizer ({len(tokenizer)})")
    model_config = Qwen2Config(
        **cfg,
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
    )
    torch.manual_seed(seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"  # large presets initialise far faster on a GPU
    say(f"initialising {model_config.num_hidden_layers} layers x {model_config.hidden_size} wide, seed {seed}, "
        f"on {device}")  # fmt: skip
    with torch.device(device):
        model = Qwen2ForCausalLM(model_config)
    if pretrain_steps:
        pretrain(model, tokenizer, texts, pretrain_steps)
    model = model.to(dtype)
    say(f"saving {sum(p.numel() for p in model.parameters()) / 1e6:,.1f} M parameters ({dtype})")
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    # Written the way Qwen2.5's own config.json is: transformers < 5 reads rope_theta only from the top
    # level and would silently fall back to 10000, making the "same" model compute differently.
    cfg_path = out / "config.json"
    saved = json.loads(cfg_path.read_text(encoding="utf-8"))
    saved["rope_theta"] = cfg["rope_theta"]
    cfg_path.write_text(json.dumps(saved, indent=2), encoding="utf-8")
    # Loaders that look at tokenizer_config's class get the Qwen2 one, which keeps the same pipeline.
    tc_path = out / "tokenizer_config.json"
    tc = json.loads(tc_path.read_text(encoding="utf-8"))
    tc["tokenizer_class"] = "Qwen2Tokenizer"
    tc_path.write_text(json.dumps(tc, indent=2, ensure_ascii=False), encoding="utf-8")


if __name__ == "__main__":  # python -m bench.models PATH CONFIG_JSON, in a framework's environment
    ensure_built(sys.argv[1], json.loads(sys.argv[2]))
