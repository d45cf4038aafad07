#!/usr/bin/env python3
"""Packs OpenAI's BPE encodings for the filter: src/bpe/data/<name>.lzma.

Source: the `.tiktoken` files inside the tiktoken-rs crate the tests compare
against (base64 token, space, rank; one per line). Output: every token's bytes in
rank order, each preceded by its length in one byte, compressed with LZMA (the
`.lzma` "alone" format). That is 1.2 MB for both encodings against 5.3 MB of
base64 text (zlib would take 1.5 MB), and the filter reads it without a base64
decoder (src/bpe/ranks.rs). Ranks must run 0..n without a
gap and tokens must be 1..255 bytes long; the script stops otherwise.

Run it again only when the encodings change; the Rust test
`bpe::tests::packed_tokens_equal_the_reference_ranks` holds the packed files to
tiktoken-rs token by token."""

import base64
import json
import subprocess
import sys
import lzma
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENCODINGS = ["o200k_base", "cl100k_base"]
WINDOW = 256 * 1024


def tiktoken_rs_assets() -> Path:
    meta = json.loads(subprocess.run(["cargo", "metadata", "--format-version", "1"], cwd=ROOT, check=True,
                                     capture_output=True, text=True).stdout)
    pkg = next(p for p in meta["packages"] if p["name"] == "tiktoken-rs")
    return Path(pkg["manifest_path"]).parent / "assets"


def pack(source: Path) -> bytes:
    tokens = {}
    for line in source.read_text().splitlines():
        if line:
            token, rank = line.split()
            tokens[int(rank)] = base64.b64decode(token)
    if sorted(tokens) != list(range(len(tokens))):
        sys.exit(f"{source}: ranks are not 0..{len(tokens) - 1}")
    out = bytearray()
    for rank in range(len(tokens)):
        token = tokens[rank]
        if not 1 <= len(token) <= 255:
            sys.exit(f"{source}: token {rank} is {len(token)} bytes long")
        out.append(len(token))
        out += token
    preset = 9 | lzma.PRESET_EXTREME
    # A 256 KiB window: the decoder's buffer is the window, and in a wasm VM
    # what configure touches stays resident. 31 KB larger than a 64 MiB window.
    lzma1 = {"id": lzma.FILTER_LZMA1, "preset": preset, "dict_size": WINDOW}
    print(f"{source.name}: {len(out)} bytes unpacked (EncodingName::unpacked_len)")
    return lzma.compress(bytes(out), format=lzma.FORMAT_ALONE, filters=[lzma1])


def main() -> None:
    assets = tiktoken_rs_assets()
    for name in ENCODINGS:
        packed = pack(assets / f"{name}.tiktoken")
        target = ROOT / "src" / "bpe" / "data" / f"{name}.lzma"
        target.write_bytes(packed)
        print(f"{target.relative_to(ROOT)}: {len(packed)} bytes")


if __name__ == "__main__":
    main()
