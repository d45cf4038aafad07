"""The filter's token counts equal the reference `tiktoken` package's, for a
corpus of prose, code, CJK, emoji and more, in both encodings (o200k_base for
the gpt-4o family, cl100k_base for gpt-4 / gpt-3.5), through the filter's own
model-to-encoding mapping.

tiktoken normally downloads its encoding files; here they come from the
tiktoken-rs crate the filter is built with (the same files), placed in
TIKTOKEN_CACHE_DIR under the names tiktoken looks for."""

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODELS = {"o200k_base": "gpt-4o-mini", "cl100k_base": "gpt-4"}


def tiktoken_rs_assets() -> Path:
    meta = json.loads(subprocess.run(["cargo", "metadata", "--format-version", "1"], cwd=ROOT, check=True,
                                     capture_output=True, text=True).stdout)
    pkg = next(p for p in meta["packages"] if p["name"] == "tiktoken-rs")
    return Path(pkg["manifest_path"]).parent / "assets"


@pytest.fixture(scope="module")
def tiktoken(tmp_path_factory):
    cache = tmp_path_factory.mktemp("tiktoken-cache")
    assets = tiktoken_rs_assets()
    for enc in MODELS:
        url = f"https://openaipublic.blob.core.windows.net/encodings/{enc}.tiktoken"
        shutil.copy(assets / f"{enc}.tiktoken", cache / hashlib.sha1(url.encode()).hexdigest())
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache)
    import tiktoken as tk  # imported after the cache is in place

    return tk


def test_counts_match_the_reference_tokenizer(tiktoken):
    corpus = json.loads((ROOT / "tests" / "fixtures" / "token-corpus.json").read_text())
    items = [{"model": model, "text": c["text"], "name": f'{c["name"]}/{enc}', "encoding": enc}
             for enc, model in MODELS.items() for c in corpus]
    ours = json.loads(subprocess.run(
        ["cargo", "run", "--quiet", "--example", "count_tokens"], cwd=ROOT, check=True,
        input=json.dumps(items), capture_output=True, text=True).stdout)
    mismatches = []
    for item, got in zip(items, ours):
        expected = len(tiktoken.get_encoding(item["encoding"]).encode_ordinary(item["text"]))
        if got != expected:
            mismatches.append((item["name"], got, expected))
    assert not mismatches, mismatches
    assert len(ours) == 2 * len(corpus) and sum(ours) > 1000
