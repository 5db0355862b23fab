"""Rebuild cc_runtime/sweep/models/tiny-llama/tokenizer.json (run once; the output is committed).

A byte-level BPE with 512 entries (3 special tokens, 256 bytes, merges learned from a generated English-like
corpus), built with the `tokenizers` library only: no hub access. Byte-level means any token id decodes to
text and any text encodes, which is what SGLang's random-ids benchmark dataset needs.

    python scripts/build_sweep_tiny_tokenizer.py   # needs `tokenizers` (present in the SGLang venvs)
"""

from __future__ import annotations

import os
import random

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "cc_runtime", "sweep", "models", "tiny-llama", "tokenizer.json")
VOCAB = 512
SPECIAL = ["<unk>", "<s>", "</s>"]  # ids 0, 1, 2, as config.json's bos/eos ids say

WORDS = ("the of and to in is that for it as was with be by on not he this are or his from at which but "
         "have an they you were her she there been one all we their has would when if so no will can more "
         "about other into time only some could them than first then its two like these may well over "
         "confidential computing bounce buffer encrypted copy kernel launch token decode prefill batch "
         "server model throughput latency memory device host stream graph scheduler request").split()


def corpus(n_lines: int = 4000, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    lines = []
    for _ in range(n_lines):
        words = [rng.choice(WORDS) for _ in range(rng.randint(5, 20))]
        words[0] = words[0].capitalize()
        lines.append(" ".join(words) + rng.choice(".,;:!?") + f" {rng.randint(0, 9999)}")
    return lines


def build() -> Tokenizer:
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=SPECIAL, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus(), trainer=trainer)
    # Llama adds <s> in front of every prompt; the benchmark client subtracts it from its prompt lengths.
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", 1)])
    assert tok.token_to_id("<s>") == 1 and tok.token_to_id("</s>") == 2 and tok.get_vocab_size() == VOCAB
    return tok


if __name__ == "__main__":
    build().save(OUT)
    print(f"wrote {os.path.normpath(OUT)}")
