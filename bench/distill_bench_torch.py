"""transformers + PyTorch side of `npm run bench:distill` (bench/distill-bench.ts runs it on the same GPU
and checkpoints, before llmopt's loop). The same training step as llmopt's:

  teacher logits (teacher in eval mode, bf16 weights, under torch.no_grad)
  -> student forward -> forward KL(teacher || student) at T = 1 over the vocabulary, in f32, on the
     scored rows (every position but the last of each sequence), divided by their count
  -> backward -> global-norm clipping at 1.0 -> AdamW (fused) -> zero_grad

Precision: the student's parameters are f32 (they are the master weights; gradients and AdamW state
are f32 too) and the forward runs under torch.autocast(device_type="cuda", dtype=torch.bfloat16), the
standard PyTorch mixed-precision recipe. Attention: attn_implementation="sdpa". Eager mode.
Writes one JSON object to --out.
"""

import argparse
import json
import time

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--teacher", required=True)
    ap.add_argument("--student", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--lr", type=float, default=1e-5)
    args = ap.parse_args()

    torch.manual_seed(0)
    import transformers

    teacher = AutoModelForCausalLM.from_pretrained(args.teacher, dtype=torch.bfloat16, attn_implementation="sdpa").cuda().eval()
    student = AutoModelForCausalLM.from_pretrained(args.student, dtype=torch.float32, attn_implementation="sdpa").cuda().train()
    student.config.use_cache = False
    decay = [p for n, p in student.named_parameters() if p.dim() > 1]
    no_decay = [p for n, p in student.named_parameters() if p.dim() <= 1]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, betas=(0.9, 0.95), eps=1e-8, fused=True,
    )
    vocab = student.config.vocab_size
    B, S = args.batch, args.seq
    scored = B * (S - 1)

    def step(ids):
        with torch.no_grad():
            t_logits = teacher(ids, use_cache=False).logits[:, :-1]
            t_logp = F.log_softmax(t_logits.float(), dim=-1)
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
            s_logits = student(ids, use_cache=False).logits[:, :-1]
        s_logp = F.log_softmax(s_logits.float(), dim=-1)
        loss = F.kl_div(s_logp, t_logp, log_target=True, reduction="sum") / scored
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    g = torch.Generator(device="cuda").manual_seed(1)
    batches = [torch.randint(0, vocab, (B, S), device="cuda", generator=g) for _ in range(args.steps + 1)]
    step(batches[0]).item()  # warm-up: kernels, allocator, cuBLAS plans
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times, losses = [], []
    for ids in batches[1:]:
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss = step(ids)
        losses.append(loss.item())  # the host reads the loss every step, as llmopt's loop does
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    times.sort()
    median = times[len(times) // 2]
    res = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": torch.cuda.get_device_name(0),
        "attn": "sdpa",
        "mode": "eager",
        "precision": "student f32 parameters (masters), f32 grads and AdamW state, forward under torch.autocast bf16; teacher bf16 weights, eval, no_grad",
        "optimizer": "torch.optim.AdamW(fused=True), clip_grad_norm_ 1.0",
        "batch": B,
        "seq": S,
        "steps": args.steps,
        "step_s": times,
        "step_s_median": median,
        "tokens_per_s": B * S / median,
        "losses": losses,
        "peak_memory_bytes": torch.cuda.max_memory_allocated(),
    }
    print(f"transformers distill step: {median * 1000:.1f} ms median, {res['tokens_per_s']:,.0f} tokens/s "
          f"(batch {B} x {S}); peak {res['peak_memory_bytes'] / 1e9:.1f} GB", flush=True)
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
