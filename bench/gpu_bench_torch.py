"""transformers + PyTorch side of `npm run bench:gpu` (bench/gpu-bench.ts runs it on the same GPU and
checkpoint): bf16 weights, sdpa attention, eager mode (torch.compile with a static cache did not run
here). Measures
  - perplexity-eval forward throughput: 2048-token windows, batch 4, logits + cross-entropy;
  - prefill tokens/s: batch 1, 2048 tokens (forward with use_cache);
  - decode tokens/s at each batch: prompt 512, then --gen-len greedy steps with the DynamicCache.
Writes one JSON object to --out.
"""

import argparse
import json
import time

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM


def timed(fn, reps=1):
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        out = fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / reps, out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--decode-batches", default="1,8,32")
    ap.add_argument("--gen-len", type=int, default=32)
    args = ap.parse_args()

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.bfloat16, attn_implementation="sdpa").cuda().eval()
    vocab = model.config.vocab_size
    res = {"torch": torch.__version__, "device": torch.cuda.get_device_name(0), "attn": "sdpa", "mode": "eager"}
    import transformers

    res["transformers"] = transformers.__version__

    with torch.inference_mode():
        # perplexity eval: 4 batches of 4 x 2048 (one warm-up)
        ids = torch.randint(0, vocab, (4, 2048), device="cuda")

        def ppl_batch():
            logits = model(ids, use_cache=False).logits
            return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten(), reduction="sum")

        ppl_batch()
        sec, _ = timed(ppl_batch, reps=4)
        res["ppl_tokens_per_s"] = 4 * 2047 / sec
        print(f"transformers perplexity eval: {res['ppl_tokens_per_s']:,.0f} tokens/s", flush=True)

        # prefill, batch 1 x 2048
        one = ids[:1]
        model(one, use_cache=True)
        sec, _ = timed(lambda: model(one, use_cache=True), reps=3)
        res["prefill_tokens_per_s"] = 2048 / sec
        print(f"transformers prefill: {res['prefill_tokens_per_s']:,.0f} tokens/s", flush=True)

        res["decode"] = {}
        for b in [int(x) for x in args.decode_batches.split(",")]:
            prompt = torch.randint(0, vocab, (b, 512), device="cuda")

            def run(steps):
                out = model(prompt, use_cache=True)
                cache = out.past_key_values
                nxt = out.logits[:, -1].argmax(-1, keepdim=True)
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                for _ in range(steps):
                    out = model(nxt, past_key_values=cache, use_cache=True)
                    cache = out.past_key_values
                    nxt = out.logits[:, -1].argmax(-1, keepdim=True)
                    nxt.item() if b == 1 else nxt[0, 0].item()  # the host reads each token, as a streaming server does
                torch.cuda.synchronize()
                return time.perf_counter() - t0

            run(2)
            sec = run(args.gen_len)
            ms = 1000 * sec / args.gen_len
            res["decode"][str(b)] = {"ms_per_step": ms, "tokens_per_s": b * args.gen_len / sec, "steps": args.gen_len}
            print(f"transformers decode batch {b}: {ms:.2f} ms/step, {b * args.gen_len / sec:,.0f} tokens/s", flush=True)

    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
