# Loads llmopt's compressed-tensors outputs with transformers (AutoModelForCausalLM.from_pretrained)
# and compares logits with the unquantized model's and with llmopt's CPU logits for the same prompt.
# If compressed-tensors is missing, dequantizes with an independent reading of the format instead.
import json, sys, traceback, importlib.metadata as md
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM
for p in ['torch', 'transformers', 'compressed-tensors', 'safetensors', 'vllm']:
    try: print(p, md.version(p))
    except Exception: print(p, 'not installed')
ref = json.load(open('llmopt-logits.json'))
ids = torch.tensor([ref['models']['stories260K']['ids']], device='cuda')
T = ids.shape[1]
def logits_of(m):
    with torch.no_grad(): return m(ids).logits[0].float().cpu()
def stats(a, b):
    la, lb = torch.log_softmax(a, -1), torch.log_softmax(b, -1)
    return 'max|d| %.2e  KLD %.2e  top1 %.3f' % ((a - b).abs().max().item(), (lb.exp() * (lb - la)).sum(-1).mean().item(), (a.argmax(-1) == b.argmax(-1)).float().mean().item())
llm = {k: torch.tensor(v['logits']).view(T, -1) for k, v in ref['models'].items()}
base = AutoModelForCausalLM.from_pretrained('stories260K', dtype=torch.float32).cuda()
lb = logits_of(base)
print('original: transformers vs llmopt CPU:', stats(llm['stories260K'], lb))
names = ['fp8-dynamic', 'fp8-static-kv', 'w8a8', 'w8a16', 'w4a16-gptq', 'w4a16-g4-asym']

def unpack(packed, bits, rows, cols):  # compressed-tensors unpack_from_int32, written from its docs
    f = 32 // bits; mask = (1 << bits) - 1
    p = packed.to(torch.int64) & 0xFFFFFFFF
    out = torch.stack([(p >> (bits * i)) & mask for i in range(f)], -1).reshape(p.shape[0], -1)[:rows, :cols]
    return out - (1 << (bits - 1))
def dequant_state(d):
    from safetensors.torch import load_file
    cfg = json.load(open(d + '/config.json')); q = cfg.pop('quantization_config')
    w = q['config_groups']['group_0']['weights']; sd = load_file(d + '/model.safetensors'); out = {}
    for k, t in sd.items():
        if k.endswith(('_scale', '_zero_point', '_shape')) and not k.endswith('layernorm.weight'): continue
        if k.endswith('.weight_packed'):
            p = k[:-14]; r, c = sd[p + '.weight_shape'].tolist(); qv = unpack(t, w['num_bits'], r, c).float()
        elif t.dtype in (torch.int8, torch.float8_e4m3fn): p = k[:-7]; qv = t.float()
        else: out[k] = t.float(); continue
        s = sd[p + '.weight_scale'].float(); zp = sd.get(p + '.weight_zero_point')
        if zp is not None and zp.dtype == torch.int32: zp = unpack(zp.t().contiguous(), w['num_bits'], s.shape[1], s.shape[0]).t()
        g = qv.shape[1] // s.shape[1] if s.dim() == 2 else qv.shape[1]
        s = s.repeat_interleave(g, 1) if s.dim() == 2 else s
        z = 0 if zp is None else zp.float().repeat_interleave(g, 1)
        out[p + '.weight'] = (qv - z) * s
    return LlamaConfig(**cfg), out

for n in names:
    try:
        m = AutoModelForCausalLM.from_pretrained(n, dtype=torch.float32).cuda()
        lq = logits_of(m)
        print(f'{n}: transformers loaded ({type(m.model.layers[0].self_attn.q_proj).__name__}); vs original: {stats(lq, lb)} | llmopt CPU vs transformers: {stats(llm[n], lq)}')
    except Exception as e:
        print(f'{n}: transformers from_pretrained failed: {type(e).__name__}: {str(e)[:300]}')
        try:
            cfg, sd = dequant_state(n); m = LlamaForCausalLM(cfg); missing = m.load_state_dict(sd, strict=False)
            m = m.float().cuda(); lq = logits_of(m)
            print(f'   independent dequant (weights only, no activation/KV simulation; missing {missing.missing_keys}): vs original: {stats(lq, lb)} | llmopt CPU vs it: {stats(llm[n], lq)}')
        except Exception: traceback.print_exc(limit=2)
