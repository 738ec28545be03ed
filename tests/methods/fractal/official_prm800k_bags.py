"""The bags of PRM800K records as the official FRACTAL preparation makes them.

google-deepmind/fractal_acl25 fractal/math_reasoning/process_data.py (commit b567a1e), the loop of
process_data() over pandas rows of openai/prm800k's phase*_*.jsonl, without the sentence encoder:
per record, every step whose completions[0] exists with a text and a rating adds that text and
int(rating); a record without such a step adds nothing; the aggregate label is 1 iff no added
step is rated -1. Reads JSON values one after another (JSON lines, or the pretty-printed examples
in ../shared/data/prm800k/raw_examples) and prints, per bag, the number of steps, the ratings and
the label: the values test_fractal.cpp's Prm800kRaw tests hold.
Run: python3 tests/methods/fractal/official_prm800k_bags.py FILE...
"""
import json
import sys

for path in sys.argv[1:]:
    text = open(path).read()
    dec, i = json.JSONDecoder(), 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            break
        record, i = dec.raw_decode(text, i)
        ratings, first_wrong = [], None
        for s, step in enumerate(record["label"]["steps"]):
            c = step["completions"]
            if c is not None and c[0] is not None and c[0]["text"] is not None and c[0]["rating"] is not None:
                ratings.append(int(c[0]["rating"]))
                if first_wrong is None:
                    first_wrong = -1
                if first_wrong == -1 and c[0]["rating"] == -1:
                    first_wrong = s
        if ratings:
            print(len(ratings), ratings, 1 if first_wrong == -1 else 0)
