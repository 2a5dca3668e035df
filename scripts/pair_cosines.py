"""Cosine of 5 paraphrase and 5 unrelated pairs for each pooling (docs/results.md)."""
import json, os, subprocess
para = [("A man is playing a guitar.", "Someone is strumming a guitar."),
 ("The cat sits on the mat.", "A cat is sitting on a rug."),
 ("How do I reset my password?", "What are the steps to change my password?"),
 ("The stock market fell sharply today.", "Share prices dropped steeply today."),
 ("Vaccines reduce the risk of severe illness.", "Immunization lowers the chance of serious disease.")]
unrel = [("A man is playing a guitar.", "The stock market fell sharply today."),
 ("The cat sits on the mat.", "Vaccines reduce the risk of severe illness."),
 ("How do I reset my password?", "Volcanoes erupt molten rock."),
 ("The stock market fell sharply today.", "She baked bread for breakfast."),
 ("Vaccines reduce the risk of severe illness.", "The train departs at noon.")]
def emb(texts, pooling):
    out = subprocess.run([os.environ.get("ENGINE_BIN", "target/release/engine"),"embed","--kind","passage","--pooling",pooling]+texts, capture_output=True, text=True, check=True).stdout
    return [json.loads(l)["embedding"] for l in out.splitlines()]
for pooling in ["llama2vec","last","mean"]:
    res = {}
    for name, pairs in [("paraphrase", para), ("unrelated", unrel)]:
        texts = [t for p in pairs for t in p]
        e = emb(texts, pooling)
        cos = [sum(a*b for a,b in zip(e[2*i], e[2*i+1])) for i in range(len(pairs))]
        res[name] = cos
    print(pooling, "paraphrase", " ".join(f"{c:.3f}" for c in res["paraphrase"]), "| unrelated", " ".join(f"{c:.3f}" for c in res["unrelated"]),
          f"| mean {sum(res['paraphrase'])/5:.3f} vs {sum(res['unrelated'])/5:.3f}")
