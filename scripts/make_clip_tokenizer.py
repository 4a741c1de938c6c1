"""Write OpenAI CLIP's BPE tokenizer files (vocab.json, merges.txt) from open_clip's BPE file.

The embedded default ships the result; run this only to regenerate it:

    pip download --no-deps open_clip_torch==3.3.0 -d /tmp/oc
    unzip -p /tmp/oc/open_clip_torch-3.3.0-py3-none-any.whl \
        open_clip/bpe_simple_vocab_16e6.txt.gz > /tmp/oc/bpe.txt.gz
    python scripts/make_clip_tokenizer.py /tmp/oc/bpe.txt.gz hf_slug/demo/embedded_clip
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

N_MERGES = 49152 - 256 - 2  # 48,894: the merges OpenAI's tokenizer uses


def byte_level_alphabet() -> list[str]:
    """The 256 characters byte-level BPE maps bytes to, in CLIP's vocabulary order.

    Printable bytes keep their own character and come first; the other bytes follow, mapped to
    code points from 256 upwards.
    """
    printable = list(range(ord("!"), ord("~") + 1))
    printable += list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    others = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(others))]


def main(bpe_gz: str, out_dir: str) -> None:
    with gzip.open(bpe_gz) as handle:
        lines = handle.read().decode("utf-8").split("\n")
    merges = lines[1 : N_MERGES + 1]
    alphabet = byte_level_alphabet()
    tokens = alphabet + [c + "</w>" for c in alphabet] + ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(
        json.dumps({t: i for i, t in enumerate(tokens)}, ensure_ascii=False)
    )
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    print(f"wrote {len(tokens)} tokens and {len(merges)} merges to {out}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
