#!/usr/bin/env python3
"""Builds tiny random checkpoints, one per supported architecture variant, and their reference logits.

Each fixture is written to <out>/<name>/:
  config.json                   the config the decoder is tested on (hand-written hub style, or the
                                one transformers serialized, see STYLE below)
  config.transformers5.json     what transformers' save_pretrained wrote (only when it differs)
  model.safetensors             float32 weights, random with a fixed seed
  logits.json                   {input_ids, logits [seq][vocab] from a float64 forward, versions, ...}
  hidden.json                   hidden states after the embedding and each layer (for debugging only)

The reference forward reloads the checkpoint from disk with from_pretrained (so it reads exactly the
config.json and weights the TypeScript decoder reads), converts it to float64 and runs eager attention
on the CPU.

Usage: python3 scripts/make-arch-fixtures.py --out OUT_DIR [--only NAME ...]
(On the GPU machine: write to a temp dir and tar it into $OUT; $OUT returns only a few files per call.)
Needs torch and transformers (checked with torch 2.11, transformers 5.x).
"""

import argparse
import json
import os
import shutil
import sys
import traceback

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoConfig, AutoModelForCausalLM  # noqa: E402

SEQ_LEN = 40
WEIGHT_STD = 0.15
BIAS_STD = 0.1
NORM_STD = 0.2

# name -> (style, config dict). style 'hub': the hand-written config.json below is what the decoder
# reads (classic rope_theta/rope_scaling keys, as most hub checkpoints have); style 'transformers5':
# config.json is whatever transformers' save_pretrained serializes (rope_parameters, layer_types).
FIXTURES = {
    # Llama, default rope, GQA, head_dim (12) != hidden/heads (8), untied lm_head.
    "llama": (
        "hub",
        {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "vocab_size": 96,
            "hidden_size": 32,
            "intermediate_size": 40,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 12,
            "max_position_embeddings": 128,
            "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0,
            "rope_scaling": None,
            "hidden_act": "silu",
            "tie_word_embeddings": False,
            "attention_bias": False,
            "mlp_bias": False,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "torch_dtype": "float32",
        },
    ),
    # Llama with classic rope_scaling linear, attention and MLP biases, tied embeddings.
    "llama-linear": (
        "hub",
        {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "vocab_size": 96,
            "hidden_size": 32,
            "intermediate_size": 40,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 4,
            "max_position_embeddings": 128,
            "rms_norm_eps": 1e-6,
            "rope_theta": 500.0,
            "rope_scaling": {"type": "linear", "factor": 2.5},
            "hidden_act": "silu",
            "tie_word_embeddings": True,
            "attention_bias": True,
            "mlp_bias": True,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "torch_dtype": "float32",
        },
    ),
    # Llama 3.1 rope in the transformers-5 rope_parameters style (as save_pretrained writes it).
    # head_dim 16, theta 10000, original context 64: the 8 frequencies fall in all three llama3
    # bands (unchanged below wavelength 16, smoothed between 16 and 64, divided by factor above 64).
    "llama3-rope": (
        "transformers5",
        {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "vocab_size": 96,
            "hidden_size": 32,
            "intermediate_size": 40,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "head_dim": 16,
            "max_position_embeddings": 256,
            "rms_norm_eps": 1e-5,
            "rope_parameters": {
                "rope_type": "llama3",
                "rope_theta": 10000.0,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 64,
            },
            "hidden_act": "silu",
            "tie_word_embeddings": False,
            "bos_token_id": 1,
            "eos_token_id": 2,
        },
    ),
    # Mistral with a sliding window (8) much shorter than the test sequence (40); MQA.
    "mistral": (
        "transformers5",
        {
            "architectures": ["MistralForCausalLM"],
            "model_type": "mistral",
            "vocab_size": 96,
            "hidden_size": 32,
            "intermediate_size": 40,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 1,
            "max_position_embeddings": 256,
            "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0,
            "sliding_window": 8,
            "hidden_act": "silu",
            "tie_word_embeddings": False,
            "bos_token_id": 1,
            "eos_token_id": 2,
        },
    ),
    # Qwen2 (q/k/v bias, no o bias), hub style, sliding window present but disabled.
    "qwen2": (
        "hub",
        {
            "architectures": ["Qwen2ForCausalLM"],
            "model_type": "qwen2",
            "vocab_size": 112,
            "hidden_size": 32,
            "intermediate_size": 40,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 128,
            "max_window_layers": 21,
            "rms_norm_eps": 1e-6,
            "rope_theta": 1000000.0,
            "sliding_window": 4,
            "use_sliding_window": False,
            "hidden_act": "silu",
            "tie_word_embeddings": True,
            "bos_token_id": 0,
            "eos_token_id": 1,
            "torch_dtype": "float32",
        },
    ),
    # Qwen2 with use_sliding_window: layers >= max_window_layers (1) slide, layer 0 is full.
    "qwen2-sliding": (
        "transformers5",
        {
            "architectures": ["Qwen2ForCausalLM"],
            "model_type": "qwen2",
            "vocab_size": 112,
            "hidden_size": 32,
            "intermediate_size": 40,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 128,
            "max_window_layers": 1,
            "rms_norm_eps": 1e-6,
            "rope_theta": 10000.0,
            "sliding_window": 6,
            "use_sliding_window": True,
            "hidden_act": "silu",
            "tie_word_embeddings": False,
            "bos_token_id": 0,
            "eos_token_id": 1,
        },
    ),
    # Qwen3: per-head q/k RMSNorm, explicit head_dim 16 != 32/4, attention_bias on q/k/v/o, tied.
    "qwen3": (
        "hub",
        {
            "architectures": ["Qwen3ForCausalLM"],
            "model_type": "qwen3",
            "vocab_size": 96,
            "hidden_size": 32,
            "intermediate_size": 40,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 16,
            "max_position_embeddings": 128,
            "max_window_layers": 28,
            "rms_norm_eps": 1e-6,
            "rope_theta": 1000000.0,
            "rope_scaling": None,
            "sliding_window": None,
            "use_sliding_window": False,
            "attention_bias": True,
            "hidden_act": "silu",
            "tie_word_embeddings": True,
            "bos_token_id": 0,
            "eos_token_id": 1,
            "torch_dtype": "float32",
        },
    ),
    # GPT-2: LayerNorm, learned positions, gelu_new, Conv1D weights, biases everywhere, tied head.
    "gpt2": (
        "hub",
        {
            "architectures": ["GPT2LMHeadModel"],
            "model_type": "gpt2",
            "vocab_size": 96,
            "n_positions": 64,
            "n_embd": 32,
            "n_layer": 2,
            "n_head": 4,
            "n_inner": 64,
            "activation_function": "gelu_new",
            "layer_norm_epsilon": 1e-5,
            "resid_pdrop": 0.0,
            "embd_pdrop": 0.0,
            "attn_pdrop": 0.0,
            "bos_token_id": 95,
            "eos_token_id": 95,
            "torch_dtype": "float32",
        },
    ),
}


def randomize(model, gen):
    """Non-trivial weights: matrices N(0, WEIGHT_STD), biases N(0, BIAS_STD), norm scales 1 + N(0, NORM_STD)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            is_norm = p.dim() == 1 and ("norm" in name or ".ln_" in name or name.startswith("ln_"))
            if is_norm and name.endswith("weight"):
                p.copy_(1.0 + NORM_STD * torch.randn(p.shape, generator=gen, dtype=torch.float64))
            elif p.dim() == 1:
                p.copy_(BIAS_STD * torch.randn(p.shape, generator=gen, dtype=torch.float64))
            else:
                p.copy_(WEIGHT_STD * torch.randn(p.shape, generator=gen, dtype=torch.float64))


def load(dir_, dtype):
    kwargs = {"attn_implementation": "eager", "output_loading_info": True}
    try:
        model, info = AutoModelForCausalLM.from_pretrained(dir_, dtype=dtype, **kwargs)
    except TypeError:
        model, info = AutoModelForCausalLM.from_pretrained(dir_, torch_dtype=dtype, **kwargs)
    problems = {k: sorted(map(str, v)) for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if problems:
        print(f"  WARNING {dir_}: loading info {problems}", flush=True)
    return model.eval(), problems


def save(model, dir_):
    try:
        model.save_pretrained(dir_, safe_serialization=True)
    except TypeError:
        model.save_pretrained(dir_)


def sig7(x):
    return float(f"{x:.7g}")


def build(name, style, cfg, out_root, seed):
    dir_ = os.path.join(out_root, name)
    shutil.rmtree(dir_, ignore_errors=True)
    os.makedirs(dir_)
    with open(os.path.join(dir_, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    config = AutoConfig.from_pretrained(dir_)
    torch.manual_seed(seed)
    try:
        model = AutoModelForCausalLM.from_config(config, attn_implementation="eager").float()
    except TypeError:
        model = AutoModelForCausalLM.from_config(config).float()
    gen = torch.Generator().manual_seed(seed)
    randomize(model, gen)
    save(model, dir_)
    for extra in ("generation_config.json",):
        p = os.path.join(dir_, extra)
        if os.path.exists(p):
            os.remove(p)
    with open(os.path.join(dir_, "config.json")) as f:
        serialized = json.load(f)
    if style == "hub":
        with open(os.path.join(dir_, "config.transformers5.json"), "w") as f:
            json.dump(serialized, f, indent=2)
        with open(os.path.join(dir_, "config.json"), "w") as f:
            json.dump(cfg, f, indent=2)

    vocab = cfg["vocab_size"]
    ids = torch.randint(0, vocab, (SEQ_LEN,), generator=gen)

    ref, load_problems = load(dir_, torch.float32)
    ref = ref.double()
    with torch.no_grad():
        out = ref(input_ids=ids[None], output_hidden_states=True)
    logits = out.logits[0]
    f32, _ = load(dir_, torch.float32)
    with torch.no_grad():
        logits32 = f32(input_ids=ids[None]).logits[0].double()

    n_params = sum(p.numel() for p in ref.parameters())
    result = {
        "name": name,
        "config_style": style,
        "input_ids": ids.tolist(),
        "logits": [[sig7(v) for v in row] for row in logits.tolist()],
        "max_abs_logit": float(logits.abs().max()),
        "float32_vs_float64_max_abs_diff": float((logits32 - logits).abs().max()),
        "parameters": n_params,
        "loading_problems": load_problems,
        "layer_types": getattr(ref.config, "layer_types", None),
        "sliding_window": getattr(ref.config, "sliding_window", None),
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "seed": seed,
        "dtype": "float64 forward of float32 weights, eager attention, CPU",
    }
    with open(os.path.join(dir_, "logits.json"), "w") as f:
        json.dump(result, f)
    hidden = [[[sig7(v) for v in row] for row in h[0].tolist()] for h in out.hidden_states]
    with open(os.path.join(dir_, "hidden.json"), "w") as f:
        json.dump({"hidden_states": hidden}, f)
    size = os.path.getsize(os.path.join(dir_, "model.safetensors"))
    print(f"{name}: {n_params} params, safetensors {size} B, max|logit| {result['max_abs_logit']:.4f}, "
          f"fp32-vs-fp64 {result['float32_vs_float64_max_abs_diff']:.3g}, layer_types {result['layer_types']}, "
          f"sliding_window {result['sliding_window']}", flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--only", nargs="*")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, transformers {transformers.__version__}", flush=True)
    failures = 0
    for i, (name, (style, cfg)) in enumerate(FIXTURES.items()):
        if args.only and name not in args.only:
            continue
        try:
            build(name, style, cfg, args.out, seed=1234 + i)
        except Exception:
            failures += 1
            print(f"{name}: FAILED", flush=True)
            traceback.print_exc()
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
