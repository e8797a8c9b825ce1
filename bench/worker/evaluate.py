"""Framework-neutral quality evaluation on the held-out split, run by the worker after training.

Held-out loss and perplexity on the answer tokens (the harness tokenizes, as in strict mode), and greedy
generation for the first N held-out prompts scored against the reference answers with ROUGE-L (rouge-score)
and BLEU-4 (sacrebleu's `zh` tokenizer), both at the character level for Chinese text.
"""

from __future__ import annotations

import math

from bench.core.record import Generation


class CharTokenizer:
    """rouge-score tokenizer: one token per non-space character (Chinese has no spaces between words)."""

    def tokenize(self, text: str) -> list[str]:
        return [c for c in text if not c.isspace()]


def rouge_l_each(predictions: list[str], references: list[str]) -> list[float]:
    """Character-level ROUGE-L F1 of each prediction (kept per prompt for a bootstrap interval)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=CharTokenizer())
    return [scorer.score(ref, pred)["rougeL"].fmeasure for pred, ref in zip(predictions, references, strict=True)]


def bleu4(predictions: list[str], references: list[str]) -> tuple[float, int]:
    """Corpus BLEU-4 in [0, 1] (Chinese split into characters by sacrebleu's `zh` tokenizer, its default
    exponential smoothing) and the number of matching 4-grams: with none, the score is smoothing alone."""
    import sacrebleu

    result = sacrebleu.corpus_bleu(predictions, [references], tokenize="zh")
    return result.score / 100, int(result.counts[3])


def answer_loss(model, rows: list[dict[str, list[int]]], pad_id: int, batch_size: int) -> tuple[float, int]:
    """Mean negative log-likelihood per answer token over `rows` (input_ids + completion_mask), and the count."""
    import torch

    device = next(model.parameters()).device
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(rows), batch_size):
            batch = rows[i : i + batch_size]
            width = max(len(r["input_ids"]) for r in batch)
            ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            attention = torch.zeros((len(batch), width), dtype=torch.long)
            answer = torch.zeros((len(batch), width), dtype=torch.bool)
            for j, r in enumerate(batch):
                n = len(r["input_ids"])
                ids[j, :n] = torch.tensor(r["input_ids"])
                attention[j, :n] = 1
                answer[j, :n] = torch.tensor(r["completion_mask"], dtype=torch.bool)
            ids, attention, answer = ids.to(device), attention.to(device), answer.to(device)
            logits = model(input_ids=ids, attention_mask=attention).logits.float()
            nll = torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="none"
            ).view(len(batch), -1)
            target = answer[:, 1:]  # token t+1 is predicted at position t
            total += float(nll[target].sum())
            count += int(target.sum())
    return total / max(count, 1), count


def generate(model, tokenizer, prompts: list[str], max_new_tokens: int) -> list[str]:
    """Greedy answers to prompts already rendered in the job's format, one at a time (no padding effects)."""
    import torch

    device = next(model.parameters()).device
    answers = []
    with torch.no_grad():
        for text in prompts:
            ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"].to(device)
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
            answers.append(tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip())
    return answers


def evaluate(model, tokenizer, examples: list, dataset, max_len: int, cfg) -> tuple[dict, list[Generation]]:
    """Held-out metrics of `model` and its generations (question, reference, prediction, its ROUGE-L), with
    the rows in the job's prompt format (`dataset`: its DatasetSpec)."""
    from bench.core.data import prompt_text, tokenize_example

    was_training = model.training
    model.eval()
    try:
        rows = [tokenize_example(tokenizer, ex, dataset, max_len) for ex in examples]
        scored = [r for r in rows if any(r["completion_mask"])]  # truncation can cut a whole answer away
        loss, tokens = answer_loss(model, scored, tokenizer.pad_token_id, cfg.batch_size)
        sample = examples[: cfg.prompts]
        predictions = generate(model, tokenizer, [prompt_text(tokenizer, ex, dataset) for ex in sample],
                               cfg.max_new_tokens)  # fmt: skip
    finally:
        model.train(was_training)
    references = [ex.output for ex in sample]
    rouge = rouge_l_each(predictions, references)
    bleu, matches = bleu4(predictions, references)
    metrics = {
        "heldout_examples": len(scored),  # the rows the held-out loss is taken over
        "heldout_rows_without_answer": len(rows) - len(scored),
        "heldout_answer_tokens": tokens,
        "heldout_loss": loss,
        "heldout_ppl": math.exp(min(loss, 50.0)),
        "generated": len(predictions),
        "rouge_l": sum(rouge) / len(rouge) if rouge else 0.0,
        "bleu4": bleu,
        "bleu4_4gram_matches": matches,
    }
    generations = [
        Generation(ex.user_content, ref, pred, r)
        for ex, ref, pred, r in zip(sample, references, predictions, rouge, strict=True)
    ]
    return metrics, generations
