#!/usr/bin/env python3
"""Pruned checkpoints load in stock transformers and give llmopt's logits (issue 5, must-show 2).

Every folder under ROOT (default .gpu/prune-check) holds a checkpoint written by `llmopt prune` and
llmopt-logits.json: {"input_ids": [...], "shape": [T, V], "logits_f32_b64": base64 of the float32
little-endian logits llmopt's CPU decoder computed} (bench/prune-table.js --export writes them).

For each: AutoModelForCausalLM.from_pretrained(dir, dtype=float32, eager attention); no missing,
unexpected or mismatched keys allowed; forward the same ids on CPU and, when there is one, on CUDA
(TF32 off); rel = max |llmopt - transformers| / max |transformers| must be <= 1e-4.

Usage: python3 scripts/gpu/check-pruned-transformers.py [ROOT]   (results JSON to $OUT when set)
"""

import base64
import json
import os
import sys
import time

import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM

TOLERANCE = 1e-4


def load(dir_):
    kwargs = {"attn_implementation": "eager", "output_loading_info": True}
    try:
        model, info = AutoModelForCausalLM.from_pretrained(dir_, dtype=torch.float32, **kwargs)
    except TypeError:
        model, info = AutoModelForCausalLM.from_pretrained(dir_, torch_dtype=torch.float32, **kwargs)
    problems = {k: sorted(map(str, v)) for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    return model.eval(), problems


def check(dir_):
    with open(os.path.join(dir_, "llmopt-logits.json")) as f:
        ref = json.load(f)
    ours = np.frombuffer(base64.b64decode(ref["logits_f32_b64"]), dtype="<f4").reshape(ref["shape"]).astype(np.float64)
    ids = torch.tensor([ref["input_ids"]], dtype=torch.long)
    model, problems = load(dir_)
    cfg = model.config
    result = {
        "name": os.path.basename(dir_),
        "model_type": cfg.model_type,
        "layers": cfg.num_hidden_layers,
        "heads": cfg.num_attention_heads,
        "kv_heads": cfg.num_key_value_heads,
        "head_dim": getattr(cfg, "head_dim", None),
        "hidden": cfg.hidden_size,
        "intermediate": cfg.intermediate_size,
        "parameters": sum(p.numel() for p in model.parameters()),
        "load_problems": problems,
    }
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for dev in devices:
        m = model.to(dev)
        with torch.no_grad():
            theirs = m(ids.to(dev)).logits[0].double().cpu().numpy()
        rel = float(np.abs(ours - theirs).max() / np.abs(theirs).max())
        result[f"rel_{dev}"] = rel
    result["ok"] = not problems and all(result[f"rel_{d}"] <= TOLERANCE for d in devices)
    return result


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else ".gpu/prune-check"
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    started = time.time()
    results = []
    for name in sorted(os.listdir(root)):
        dir_ = os.path.join(root, name)
        if not os.path.isfile(os.path.join(dir_, "llmopt-logits.json")):
            continue
        try:
            r = check(dir_)
        except Exception as e:  # a checkpoint transformers cannot load is a failure, not a crash
            r = {"name": name, "ok": False, "error": f"{type(e).__name__}: {e}"}
        results.append(r)
        rels = " ".join(f"{k[4:]} {r[k]:.2e}" for k in r if k.startswith("rel_"))
        print(f"{'OK  ' if r['ok'] else 'FAIL'} {name}: {rels} {r.get('error', '')}{r.get('load_problems') or ''}", flush=True)
    summary = {
        "check": "pruned checkpoints: transformers from_pretrained (fp32, eager) logits vs llmopt CPU decoder logits",
        "tolerance": f"max |llmopt - transformers| / max |transformers| <= {TOLERANCE}",
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "checked": len(results),
        "passed": sum(r["ok"] for r in results),
        "wall_s": time.time() - started,
        "results": results,
    }
    print(f"{summary['passed']}/{summary['checked']} passed (transformers {transformers.__version__}, torch {torch.__version__})")
    if os.environ.get("OUT"):
        with open(os.path.join(os.environ["OUT"], "prune-transformers-check.json"), "w") as f:
            json.dump(summary, f, indent=1)
    sys.exit(0 if results and summary["passed"] == len(results) else 1)


if __name__ == "__main__":
    main()
