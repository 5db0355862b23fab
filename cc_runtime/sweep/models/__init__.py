"""Model folders shipped for smoke sweeps: config and tokenizer files only, never weights.

``tiny-llama``: a 2-layer Llama (hidden 256, vocab 512, 16k positions) for ``cc-runtime sweep
--dummy-weights`` (SGLang's ``--load-format dummy``); its byte-level BPE tokenizer was built locally with
the ``tokenizers`` library by ``scripts/build_sweep_tiny_tokenizer.py``, so nothing comes from a hub.
"""

import os

TINY_LLAMA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tiny-llama")
