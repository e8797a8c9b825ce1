"""The shared callback's token counting, on real tensors in the TRL environment."""

import json

import pytest

pytestmark = pytest.mark.integration  # needs the TRL environment: not in the quick tier


def counts(in_trl_env, inputs: str) -> list[int]:
    code = f"""
import json, torch
from bench.worker.callback import batch_token_counts
print(json.dumps(batch_token_counts({inputs})))
"""
    return json.loads(in_trl_env(code))


def test_padded_batch_counts_the_attention_mask(in_trl_env):
    tokens, trainable, len_sq = counts(
        in_trl_env,
        """{
        "input_ids": torch.ones(2, 8, dtype=torch.long),
        "attention_mask": torch.tensor([[1] * 8, [1] * 5 + [0] * 3]),
        "labels": torch.tensor([[-100] * 4 + [1] * 4, [-100] * 3 + [1] * 2 + [-100] * 3])}""",
    )
    assert (tokens, trainable, len_sq) == (13, 6, 64 + 25)


def test_padding_free_batch_counts_packed_sequences_without_their_padding(in_trl_env):
    # Two sequences (5 and 3 tokens) packed into one row, padded to 10 with position 0.
    tokens, trainable, len_sq = counts(
        in_trl_env,
        """{
        "input_ids": torch.ones(1, 10, dtype=torch.long),
        "position_ids": torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2, 0, 0]]),
        "labels": torch.tensor([[-100, -100, 1, 1, 1, -100, 1, 1, -100, -100]])}""",
    )
    assert (tokens, trainable, len_sq) == (8, 5, 25 + 9)


def test_model_facts_count_lora_parameters_as_trainable(in_trl_env):
    code = """
import json, peft, transformers
from bench.worker.callback import model_facts
cfg = transformers.Qwen2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                               num_key_value_heads=2, vocab_size=128, tie_word_embeddings=True)
model = peft.get_peft_model(transformers.Qwen2ForCausalLM(cfg), peft.LoraConfig(r=4, target_modules=["q_proj"]))
print(json.dumps(model_facts(model)))
"""
    facts = json.loads(in_trl_env(code))
    assert facts["trainable_params"] == 2 * 4 * (32 + 32)  # A and B of q_proj in two layers
    assert facts["embedding_params"] == 128 * 32
    assert facts["matmul_params"] == facts["params"]  # tied output projection: embedding size counted back
    assert (facts["num_layers"], facts["attn_dim"]) == (2, 32)


def test_counting_a_micro_batch_never_reads_the_device(in_trl_env):
    # Meta tensors have shapes but no data: any read back to the host (.item(), .tolist(), int(t)) raises.
    # Counting and fingerprinting must pass them through, so on a GPU no micro-batch waits for the device.
    code = """
import json, torch
from bench.worker.callback import StepRecorder
rec = StepRecorder(emit=lambda e: None)
module = torch.nn.Linear(1, 1)
meta = dict(device="meta")
padded = {"input_ids": torch.ones(2, 8, dtype=torch.long, **meta), "attention_mask": torch.ones(2, 8, **meta),
          "labels": torch.ones(2, 8, dtype=torch.long, **meta)}
packed = {"input_ids": torch.ones(1, 10, dtype=torch.long, **meta), "position_ids": torch.zeros(1, 10, **meta),
          "labels": torch.ones(1, 10, dtype=torch.long, **meta)}
for _ in range(3):
    rec._count_batch(module, (), padded)
    rec._count_batch(module, (), packed)
print(json.dumps([str(rec._counts.device), rec._fed, rec._rows, rec.fingerprint.seen]))
"""
    assert json.loads(in_trl_env(code)) == ["meta", 3 * (16 + 10), 3 * (2 + 1), 6]


def test_sequences_per_row_tell_a_packed_batch_from_a_padded_one(in_trl_env):
    code = """
import json, torch
from bench.worker.callback import batch_counts
padded = {"input_ids": torch.ones(2, 8, dtype=torch.long), "attention_mask": torch.tensor([[1] * 8, [1] * 5 + [0] * 3])}
packed = {"input_ids": torch.ones(1, 10, dtype=torch.long),
          "position_ids": torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2, 0, 0]])}
print(json.dumps([batch_counts(padded).tolist()[3], batch_counts(packed).tolist()[3]]))
"""
    assert json.loads(in_trl_env(code)) == [2, 2]  # two rows of one sequence each; one row of two sequences


def test_rows_without_mask_or_positions_count_every_slot(in_trl_env):
    code = """
import json, torch
from bench.worker.callback import batch_counts, StepRecorder
rows = {"input_ids": torch.ones(3, 8, dtype=torch.long), "labels": torch.tensor([[-100] * 4 + [1] * 4] * 3)}
meta = {k: v.to("meta") for k, v in rows.items()}
StepRecorder(emit=lambda e: None)._count_batch(torch.nn.Linear(1, 1), (), meta)  # no host read here either
print(json.dumps(batch_counts(rows).tolist()))
"""
    assert json.loads(in_trl_env(code)) == [24, 12, 3 * 64, 3]
