"""The one TrainerCallback every runner passes to its framework (all of them train through HF Trainer).

Per optimizer step it emits: loss, learning rate, grad norm, tokens fed (non-padding), trainable (answer)
tokens and step wall time. Tokens are counted by the harness itself, from the batches the model is actually
called with (a forward pre-hook), so they are counted the same way whatever the framework's collator does.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable
from typing import Any

from bench.core.record import Step
from bench.worker.phases import Phases

IGNORE_INDEX = -100


def packed_segments(position_ids: list[int]) -> list[tuple[int, int]]:
    """(start, length) of each sequence in a padding-free (packed) row, where positions restart at 0 for each
    sequence. Padding-free collators pad the row with position 0, so padding shows up as sequences of length
    1; an SFT example (system prompt, question, answer) is never one token long, so those are dropped."""
    starts = [i for i, p in enumerate(position_ids) if p == 0] + [len(position_ids)]
    return [(a, b - a) for a, b in zip(starts, starts[1:], strict=False) if b - a > 1]


def sequences(inputs: dict[str, Any]) -> list[tuple[list[int], list[bool]]]:
    """Each real (non-padding) sequence of one model call: its token ids and which tokens carry a label.

    Padded batches are cut by their attention mask, padding-free ones by where positions restart, so the
    same examples give the same sequences whatever layout a framework's collator chose.
    """
    input_ids = inputs.get("input_ids")
    if input_ids is None:
        return []
    labels = inputs.get("labels")
    mask = inputs.get("attention_mask")
    ids = input_ids.reshape(-1, input_ids.shape[-1]).tolist()
    labelled = (labels != IGNORE_INDEX).reshape(len(ids), -1).tolist() if labels is not None else None
    out = []
    for r, row in enumerate(ids):
        lab = labelled[r] if labelled else [False] * len(row)
        if mask is not None and mask.dim() == 2:
            keep = [i for i, m in enumerate(mask[r].tolist()) if m]
            out.append(([row[i] for i in keep], [lab[i] for i in keep]))
        elif inputs.get("position_ids") is not None:
            positions = inputs["position_ids"].reshape(len(ids), -1)[r].tolist()
            out.extend((row[a : a + n], lab[a : a + n]) for a, n in packed_segments(positions))
        else:
            out.append((row, lab))
    return out


def batch_counts(inputs: dict[str, Any]):
    """Counts of one model call as a device tensor, so that nothing waits for the GPU here: [non-padding
    tokens, tokens that contribute to the loss, sum of squared sequence lengths, sequences]. The squared
    lengths size the attention FLOPs; sequences against rows tell a packed batch from a padded one.

    Padded batches are measured by their attention mask, padding-free and packed ones by their position ids
    (a sequence of length n has positions 0..n-1, and 1 + 3 + ... + (2n-1) = n², so the squared lengths are a
    sum over tokens). Padding in a padding-free row has position 0 next to another 0: a singleton, dropped as
    in packed_segments. Returns None when the call has no token ids.
    """
    import torch

    input_ids = inputs.get("input_ids")
    if input_ids is None:
        return None
    mask = inputs.get("attention_mask")
    position_ids = inputs.get("position_ids")
    labels = inputs.get("labels")
    rows = input_ids.reshape(-1, input_ids.shape[-1])
    if mask is not None and mask.dim() == 2:
        lengths = mask.sum(dim=-1)
        tokens, len_sq, seqs = lengths.sum(), (lengths * lengths).sum(), (lengths > 0).sum()
    elif position_ids is not None:  # padding-free or packed rows (a 4D mask, if any, is block-diagonal)
        pos = position_ids.reshape(rows.shape)
        following = torch.cat([pos[:, 1:], torch.zeros_like(pos[:, :1])], dim=1)
        real = ~((pos == 0) & (following == 0))
        tokens, len_sq = real.sum(), ((2 * pos + 1) * real).sum()
        seqs = ((pos == 0) & real).sum()
    else:
        # new_full fills on the device; torch.tensor(..., device=) would copy from the host and wait for it.
        n, r = rows.new_full((), rows.shape[-1]), rows.new_full((), rows.shape[0])
        tokens, len_sq, seqs = n * r, n * n * r, r
    # Causal LM loss compares position t with label t+1, so the first label of each row never counts.
    trainable = (labels[..., 1:] != IGNORE_INDEX).sum() if labels is not None else torch.zeros_like(tokens)
    return torch.stack([tokens, trainable, len_sq, seqs]).to(torch.float64)


def batch_token_counts(inputs: dict[str, Any]) -> tuple[int, int, int]:
    """(non-padding tokens, tokens that contribute to the loss, sum of squared sequence lengths) of one call,
    read back to Python (tests and off-the-clock callers; the step loop keeps batch_counts on the device)."""
    counts = batch_counts(inputs)
    return (0, 0, 0) if counts is None else tuple(int(v) for v in counts.tolist()[:3])


class Fingerprint:
    """What a run trained on: dataset size and token totals, and a hash of the first batches fed to the model.

    The hash covers each sequence's token ids and label mask in the order the model saw them, so two runs
    share it only if they fed the same examples, in the same order and batches, rendered, truncated and
    masked the same way.
    """

    KEYS = ("input_ids", "labels", "attention_mask", "position_ids")

    def __init__(self, batches: int):
        self.batches = batches
        self.seen = 0
        self._hash = hashlib.sha256()
        self._kept: list[dict[str, Any]] = []
        self.facts: dict[str, Any] = {}

    def add(self, inputs: dict[str, Any]) -> None:
        """Keep a device copy of one of the first batches (an asynchronous copy: no wait for the GPU); they
        are hashed off the clock, in result(). A 4D mask is not kept (sequences() reads positions then)."""
        if self.seen >= self.batches:
            return
        self.seen += 1
        self._kept.append(
            {
                k: v.detach().clone()
                for k in self.KEYS
                if (v := inputs.get(k)) is not None and not (k == "attention_mask" and v.dim() != 2)
            }
        )

    def _digest(self) -> None:
        for inputs in self._kept:
            self._hash.update(b"B")
            for ids, labelled in sequences(inputs):
                self._hash.update(b"S" + ",".join(map(str, ids)).encode() + b"|" + bytes(map(int, labelled)))
        self._kept = []

    def dataset(self, dataset) -> None:
        """Sizes of the tokenized training set the framework built (columns vary by framework)."""
        with contextlib.suppress(Exception):
            self.facts["examples"] = len(dataset)
            columns = set(getattr(dataset, "column_names", None) or [])
            if "input_ids" in columns:
                self.facts["dataset_tokens"] = sum(len(x) for x in dataset["input_ids"])
            if "labels" in columns:
                self.facts["dataset_trainable_tokens"] = sum(
                    sum(t != IGNORE_INDEX for t in x) for x in dataset["labels"]
                )
            elif "completion_mask" in columns:
                self.facts["dataset_trainable_tokens"] = sum(sum(x) for x in dataset["completion_mask"])

    def result(self) -> dict[str, Any]:
        self._digest()
        return {**self.facts, "batches_hashed": self.seen, "first_batches_sha256": self._hash.hexdigest()}


def model_facts(model) -> dict[str, Any]:
    """Parameter counts and shape of the model being trained, for FLOP accounting."""
    params = trainable = embedding = 0
    for name, p in model.named_parameters():
        params += p.numel()
        trainable += p.numel() if p.requires_grad else 0
        embedding += p.numel() if name.endswith("embed_tokens.weight") else 0
    config = getattr(model, "config", None)
    get = (lambda k: getattr(config, k, None)) if config is not None else (lambda k: None)
    head_dim = get("head_dim") or (get("hidden_size") // get("num_attention_heads") if get("hidden_size") else None)
    lm_head = get("vocab_size") * get("hidden_size") if get("vocab_size") and get("hidden_size") else 0
    return {
        "params": params,
        "trainable_params": trainable,
        "embedding_params": embedding,
        # Matmul parameters: everything but the embedding lookup, plus the output projection even when
        # it shares its weights with the embedding (the matmul happens either way).
        "matmul_params": params - embedding + (lm_head if get("tie_word_embeddings") else 0),
        "num_layers": get("num_hidden_layers"),
        "attn_dim": head_dim * get("num_attention_heads") if head_dim else None,
    }


class StepRecorder:
    """Writes one `Step` per optimizer step through `emit` (events.jsonl). A runner hands it to its trainer
    as a TrainerCallback (trainer_callback).

    Token counts accumulate on the device and are read once per optimizer step, where the step's time is
    taken anyway: the bookkeeping adds no GPU synchronisation per micro-batch. With `heldout` (a function of
    the model returning the held-out answer loss) and `every_steps`, the held-out loss is also taken every
    N steps; that time is kept off the steps' clock and reported on its own.
    """

    def __init__(
        self,
        emit: Callable[[Step], None],
        fingerprint_batches: int = 8,
        heldout: Callable[[Any], float] | None = None,
        every_steps: int | None = None,
        phases: bool = True,
    ):
        self.emit = emit
        self.phases = Phases() if phases else None  # each step's time by phase (bench/worker/phases.py)
        self.fingerprint = Fingerprint(fingerprint_batches)
        self.heldout = heldout
        self.every_steps = every_steps
        self.train_span: tuple[float, float] | None = None  # perf_counter at train begin / end
        self.train_window: tuple[float, float] | None = None  # the same in wall-clock time, for the samples
        self.model = None  # the model being trained, for evaluation afterwards
        self._hook = None
        self._counts = None  # [tokens, trainable, len_sq, sequences] of the current step, on the device
        self._fed = 0  # token slots fed (padding included) in the current step: known from shapes alone
        self._rows = 0
        self.layout = {"tokens_fed": 0, "rows": 0, "sequences": 0, "tokens": 0}  # over the whole run
        self.model_facts: dict[str, Any] = {}
        self._step_mark = 0.0
        self.eval_s = 0.0  # held-out evaluations during training
        self.first_loss: float | None = None
        self._pending: dict[int, Step] = {}
        self._cuda_sync: Callable[[], None] | None = None

    def _count_batch(self, module, args, kwargs):
        if module.training:
            self.fingerprint.add(kwargs)
            counts = batch_counts(kwargs)
            if counts is not None:
                self._counts = counts if self._counts is None else self._counts + counts
                ids = kwargs["input_ids"]
                self._fed += ids.numel()
                self._rows += ids.numel() // ids.shape[-1]

    def on_train_begin(self, args, state, control, model=None, train_dataloader=None, **kwargs):
        import torch

        if train_dataloader is not None:
            self.fingerprint.dataset(train_dataloader.dataset)
        if model is not None:
            self.model = model
            self._hook = model.register_forward_pre_hook(self._count_batch, with_kwargs=True)
            self.model_facts = model_facts(model)
        if torch.cuda.is_available():
            self._cuda_sync = torch.cuda.synchronize
        if self.phases is not None and model is not None:
            self.phases.attach(model)
        self._restart()
        self.train_span = (self._step_mark, self._step_mark)
        self.train_window = (time.time(), time.time())

    def _all_ranks(self, counts: list[float]) -> list[int]:
        """Counts summed over data-parallel ranks (each rank only sees its own batches)."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return [int(v) for v in counts]
        import torch

        device = next(self.model.parameters()).device if self.model is not None else "cpu"
        t = torch.tensor(counts, dtype=torch.float64, device=device if dist.get_backend() == "nccl" else "cpu")
        dist.all_reduce(t)
        return [int(v) for v in t.tolist()]

    def on_step_end(self, args, state, control, **kwargs):
        if self._cuda_sync is not None:
            self._cuda_sync()  # step time is wall time of finished GPU work, not of queued kernels
        now = time.perf_counter()
        # The one read of the step's counts (the GPU has finished the step, so it does not wait).
        device_counts = self._counts.tolist() if self._counts is not None else [0, 0, 0, 0]
        tokens, trainable, len_sq, seqs, fed, rows = self._all_ranks([*device_counts, self._fed, self._rows])
        for key, value in (("tokens_fed", fed), ("rows", rows), ("sequences", seqs), ("tokens", tokens)):
            self.layout[key] += value
        event = Step(state.global_step, step_time_s=now - self._step_mark, tokens=tokens, trainable_tokens=trainable,
                     len_sq=len_sq, time=time.time(), tokens_fed=fed)
        if self.phases is not None:
            event.phases = self.phases.step_end(event.step_time_s)
        self._counts, self._fed, self._rows = None, 0, 0
        if self.heldout is not None and self.every_steps and state.global_step % self.every_steps == 0:
            event.heldout_loss, event.eval_s, event.elapsed_s = self._evaluate()
        self._pending[state.global_step] = event
        self._restart()

    def _evaluate(self) -> tuple[float, float, float]:
        """Held-out loss now, off the steps' clock; `elapsed_s` is wall time since training began, these
        evaluations included (what a time-to-target counts, as MLPerf's does)."""
        start = time.perf_counter()
        loss = self.heldout(self.model)
        if self._cuda_sync is not None:
            self._cuda_sync()
        end = time.perf_counter()
        self.eval_s += end - start
        return loss, end - start, end - self.train_span[0]

    def on_log(self, args, state, control, logs=None, **kwargs):
        event = self._pending.pop(state.global_step, None)
        if event is None or not logs or "loss" not in logs:
            if event is not None:
                self._pending[state.global_step] = event
            return
        if self.first_loss is None:
            self.first_loss = float(logs["loss"])
        event.gpus, event.loss = args.world_size, float(logs["loss"])
        event.lr = float(logs.get("learning_rate", float("nan")))
        event.grad_norm = float(logs["grad_norm"]) if logs.get("grad_norm") is not None else None
        self.emit(event)
        self._restart()  # logging is bookkeeping, not training time

    def _restart(self) -> None:
        """The next step's clock starts now (and its phases with it)."""
        self._step_mark = time.perf_counter()
        if self.phases is not None:
            self.phases.start()

    def on_train_end(self, args, state, control, **kwargs):
        if self.train_span is not None:
            self.train_span = (self.train_span[0], time.perf_counter())
            self.train_window = (self.train_window[0], time.time())
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        if self.phases is not None:
            self.phases.detach()


def trainer_callback(callback: Any):
    """`callback`, a harness object with some of TrainerCallback's event methods, as a TrainerCallback: the
    events it has go to it, the others do nothing. transformers is imported here, when a runner trains with
    it, not when the worker starts (runners that do not train through it never import it)."""
    from transformers import TrainerCallback

    events = {name: staticmethod(getattr(callback, name)) for name in dir(type(callback)) if name.startswith("on_")}
    return type(type(callback).__name__, (TrainerCallback,), events)()
