#!/usr/bin/env python3
"""Reference token ids for kiln's GGUF tokenizer tests (tests/data/test_gguf_vocab_reference.cpp).

Usage:
  gguf_vocab_reference.py spm-gguf MODEL.model OUT.gguf
      A GGUF holding only the "llama" vocabulary of a SentencePiece model, written with the `gguf`
      package as llama.cpp's converter writes one: pieces, scores, types, special ids, flags.
  gguf_vocab_reference.py ids IN.json OUT.json
      IN: {"texts": [...], "jobs": {"name": {"kind": ..., ...}}}; OUT: {"name": [[ids], ...],
      "numeric": [does text i hold a \\p{N} character], "versions": {...}}. No special tokens are
      added by any of them. Kinds:
        transformers_gguf {dir, file}: transformers' own GGUF loader (AutoTokenizer, gguf_file=)
        transformers_dir {dir}: transformers on a folder (the files kiln wrote); also NAME_special,
            the first text's ids with the special tokens the folder's files ask for
        digits_bpe {gguf}: a `tokenizers` Tokenizer built here over the file's vocabulary and merges
            with Digits(individual_digits) + ByteLevel(use_regex): SmolLM2's own pre-tokenizer and
            llama.cpp's `smollm` rule; control tokens special, user-defined ones plain added tokens
        tokenizers_json {path}: `tokenizers` on a tokenizer.json
        sentencepiece {path}: `sentencepiece` on a tokenizer.model
"""
import json
import sys
import unicodedata


def spm_gguf(model_path, out_path):
    import gguf
    import sentencepiece.sentencepiece_model_pb2 as pb

    m = pb.ModelProto()
    m.ParseFromString(open(model_path, "rb").read())
    w = gguf.GGUFWriter(out_path, arch="llama")
    w.add_tokenizer_model("llama")
    w.add_token_list([p.piece.encode("utf-8") for p in m.pieces])
    w.add_token_scores([p.score for p in m.pieces])
    w.add_token_types([int(p.type) for p in m.pieces])
    t = m.trainer_spec
    w.add_bos_token_id(t.bos_id)
    w.add_eos_token_id(t.eos_id)
    w.add_unk_token_id(t.unk_id)
    if t.pad_id >= 0:
        w.add_pad_token_id(t.pad_id)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_add_space_prefix(m.normalizer_spec.add_dummy_prefix)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def gguf_vocab(path):
    import gguf

    r = gguf.GGUFReader(path)
    f = r.fields
    tokens = f["tokenizer.ggml.tokens"].contents()
    types = f["tokenizer.ggml.token_type"].contents()
    merges = f["tokenizer.ggml.merges"].contents()
    return tokens, types, merges


def digits_bpe(path):
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    tokens, types, merges = gguf_vocab(path)
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[tuple(m.split(" ", 1)) for m in merges]))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
    )
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t, k in zip(tokens, types) if k in (2, 3)])
    tok.add_tokens([AddedToken(t, normalized=False, special=False) for t, k in zip(tokens, types) if k == 4])
    return tok


def ids(in_path, out_path):
    spec = json.load(open(in_path, encoding="utf-8"))
    texts = spec["texts"]
    import sentencepiece
    import tokenizers
    import transformers

    out = {
        "versions": {
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
            "sentencepiece": sentencepiece.__version__,
        },
        "numeric": [any(unicodedata.category(c).startswith("N") for c in t) for t in texts],
    }
    for name, job in spec["jobs"].items():
        kind = job["kind"]
        if kind == "transformers_gguf":
            t = transformers.AutoTokenizer.from_pretrained(job["dir"], gguf_file=job["file"])
            out[name] = [t(x, add_special_tokens=False)["input_ids"] for x in texts]
        elif kind == "transformers_dir":
            t = transformers.AutoTokenizer.from_pretrained(job["dir"])
            out[name] = [t(x, add_special_tokens=False)["input_ids"] for x in texts]
            # With the special tokens the folder's files ask for (BOS or not): the first text.
            out[name + "_special"] = t(texts[0])["input_ids"]
        elif kind == "digits_bpe":
            t = digits_bpe(job["gguf"])
            out[name] = [e.ids for e in t.encode_batch(texts, add_special_tokens=False)]
        elif kind == "tokenizers_json":
            t = tokenizers.Tokenizer.from_file(job["path"])
            out[name] = [e.ids for e in t.encode_batch(texts, add_special_tokens=False)]
        elif kind == "sentencepiece":
            sp = sentencepiece.SentencePieceProcessor(model_file=job["path"])
            out[name] = [sp.encode(x) for x in texts]
        else:
            raise SystemExit(f"unknown job kind {kind!r}")
    json.dump(out, open(out_path, "w", encoding="utf-8"))


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "spm-gguf":
        spm_gguf(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 4 and sys.argv[1] == "ids":
        ids(sys.argv[2], sys.argv[3])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
