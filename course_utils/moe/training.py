"""A tiny MoE language model next to a dense one of the same active size, trained from scratch with the balancing
options (aux loss, z-loss, DeepSeek-V3's bias updates), and where its tokens go."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..checks import check_int, check_number
from .balance import expert_share, load_balancing_loss, router_z_loss
from .layer import MoE
from .routing import update_expert_bias


def _qwen3(vocab_size, d_model, n_layers, n_heads, d_ff, max_positions, seed):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    check_int("vocab_size", vocab_size)
    check_int("n_layers", n_layers)
    check_int("n_heads", n_heads)
    check_int("d_ff", d_ff)
    if d_model % n_heads:
        raise ValueError(f"d_model must be divisible by n_heads={n_heads}, got {d_model}")
    config = Qwen3Config(vocab_size=vocab_size, hidden_size=d_model, intermediate_size=d_ff, num_hidden_layers=n_layers,
                         num_attention_heads=n_heads, num_key_value_heads=n_heads, head_dim=d_model // n_heads,
                         max_position_embeddings=max_positions, tie_word_embeddings=True)
    torch.manual_seed(seed)
    return Qwen3ForCausalLM(config)


def dense_language_model(vocab_size: int, *, d_model: int = 64, n_layers: int = 2, n_heads: int = 4, d_ff: int = 256,
                         max_positions: int = 256, seed: int = 0):
    """A small transformers Qwen3ForCausalLM with one dense SwiGLU FFN of width d_ff per layer."""
    with torch.random.fork_rng(devices=[]):  # initialize from `seed` without touching the global RNG
        return _qwen3(vocab_size, d_model, n_layers, n_heads, d_ff, max_positions, seed)


def moe_language_model(vocab_size: int, *, d_model: int = 64, n_layers: int = 2, n_heads: int = 4, d_ff: int = 128,
                       n_experts: int = 8, top_k: int = 2, n_shared_experts: int = 0, noise_std: float = 0.0,
                       max_positions: int = 256, seed: int = 0):
    """The same model with every FFN replaced by our MoE: n_experts experts of width d_ff, top_k of them per token,
    plus n_shared_experts always-on ones. Active FFN width per token: (top_k + n_shared_experts) * d_ff."""
    with torch.random.fork_rng(devices=[]):
        model = _qwen3(vocab_size, d_model, n_layers, n_heads, d_ff, max_positions, seed)
        for layer in model.model.layers:
            layer.mlp = MoE(d_model, d_ff, n_experts, top_k, noise_std=noise_std, n_shared_experts=n_shared_experts)
    return model


def active_params(model) -> int:
    """Parameters one token uses: all of them minus the routed experts it skips in each MoE layer."""
    total = sum(p.numel() for p in model.parameters())
    for m in moe_layers(model):
        per_expert = sum(p.numel() for p in m.experts[0].parameters())
        total -= (m.n_experts - m.top_k) * per_expert
    return total


def corpus_rows(tokenizer, n_documents: int, seq_len: int, *, seed: int = 0) -> torch.Tensor:
    """course_utils.data.pretraining_corpus(n_documents, seed) tokenized and packed into rows (N, seq_len)."""
    from ..data import pretraining_corpus
    from ..pretrain import pack

    check_int("n_documents", n_documents)
    check_int("seq_len", seq_len, 2)
    return pack(tokenizer, pretraining_corpus(n_documents, seed=seed), seq_len)


def moe_layers(model) -> list[MoE]:
    """The MoE modules of a model, in order."""
    return [m for m in model.modules() if isinstance(m, MoE)]


def train_moe_lm(model, rows: torch.Tensor, *, steps: int, batch_size: int, lr: float = 3e-3,
                 aux_loss_coef: float = 0.01, z_loss_coef: float = 0.0, bias_update_rate: float = 0.0, seed: int = 0,
                 log_every: int = 1) -> dict:
    """Next-token training on packed rows (N, T): loss = CE + aux_loss_coef * f·P aux loss + z_loss_coef * z-loss.

    bias_update_rate > 0: after every step each router's expert_bias moves by -rate * sign(load - mean load)
    (DeepSeek-V3's auxiliary-loss-free balancing). A model without MoE layers (dense_language_model) trains on CE.
    Returns {"step", "ce", "aux", "z", "share"}: share is (n_logged, n_layers, E), each expert's fraction of
    assignments on the training batch (aux and z are logged even when their coefficient is 0).
    """
    check_int("steps", steps)
    check_int("batch_size", batch_size)
    if not isinstance(rows, torch.Tensor) or rows.dim() != 2:
        raise ValueError(f"rows must be a 2-D tensor of token ids (N, T), got {getattr(rows, 'shape', rows)}")
    for name, value in (("aux_loss_coef", aux_loss_coef), ("z_loss_coef", z_loss_coef),
                        ("bias_update_rate", bias_update_rate)):
        check_number(name, value, 0)
    gen = torch.Generator().manual_seed(seed)
    layers = moe_layers(model)
    if not layers and (aux_loss_coef or z_loss_coef or bias_update_rate):
        raise ValueError("aux_loss_coef, z_loss_coef and bias_update_rate need MoE layers; this model has none")
    for i, m in enumerate(layers):
        m.gate.generator = torch.Generator().manual_seed(seed + 1000 + i)
    dev = next(model.parameters()).device
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    log = {"step": [], "ce": [], "aux": [], "z": [], "share": []}
    model.train()
    for step in range(steps):
        batch = rows[torch.randint(0, rows.shape[0], (batch_size,), generator=gen)].to(dev)  # (B, T)
        logits = model(input_ids=batch).logits  # (B, T, V)
        ce = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        loss, aux, z = ce, torch.zeros(()), torch.zeros(())
        if layers:
            router_logits = tuple(m.last_router_logits for m in layers)
            aux = load_balancing_loss(router_logits, layers[0].n_experts, layers[0].top_k)
            z = router_z_loss(router_logits)
            loss = ce + aux_loss_coef * aux + z_loss_coef * z
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if bias_update_rate:
            for m in layers:
                m.gate.expert_bias.copy_(update_expert_bias(m.gate.expert_bias, m.last_top_k_index, bias_update_rate))
        if step % log_every == 0 or step == steps - 1:
            log["step"].append(step)
            log["ce"].append(ce.item())
            log["aux"].append(aux.item())
            log["z"].append(z.item())
            log["share"].append(torch.stack([expert_share(m.last_top_k_index, m.n_experts) for m in layers])
                                if layers else torch.zeros(0))
    model.eval()
    log["share"] = torch.stack(log["share"])  # (n_logged, n_layers, E)
    return log


@torch.no_grad()
def expert_shares(model, rows: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """Each MoE layer's share of assignments per expert on rows (N, T): (n_layers, E), rows sum to 1."""
    layers = moe_layers(model)
    if not layers:
        raise ValueError("model has no MoE layers; build it with moe_language_model")
    model.eval()
    dev = next(model.parameters()).device
    counts = torch.zeros(len(layers), layers[0].n_experts)
    for i in range(0, rows.shape[0], batch_size):
        model(input_ids=rows[i: i + batch_size].to(dev))
        for j, m in enumerate(layers):
            counts[j] += torch.bincount(m.last_top_k_index.reshape(-1).cpu(), minlength=m.n_experts).float()
    return counts / counts.sum(-1, keepdim=True)


TOKEN_CLASSES = ("digit", "word start (space+letters)", "letters (inside a word)", "punctuation/other")


def token_class(token: str) -> str:
    """The surface class of a byte-level BPE token: digits with or without a leading space ('Ġ5') are "digit"."""
    text = token.replace("Ġ", " ").replace("Ċ", "\n")
    if text.strip().isdigit():
        return "digit"
    if text.startswith(" ") and text[1:].isalpha():
        return "word start (space+letters)"
    if text.isalpha():
        return "letters (inside a word)"
    return "punctuation/other"


@torch.no_grad()
def routing_by_token_class(model, tokenizer, rows: torch.Tensor, layer: int = 0) -> dict[str, torch.Tensor]:
    """Expert share of the first choice for each token class (digit, letters, space+letters, punctuation/other).

    rows (N, T) -> {class: (E,) shares}, measured on `layer`'s MoE.
    """
    layers = moe_layers(model)
    check_int("layer", layer, 0, len(layers) - 1)
    model.eval()
    model(input_ids=rows.to(next(model.parameters()).device))
    first = layers[layer].last_top_k_index[:, 0].cpu()  # (N*T,)
    classes = {name: [] for name in TOKEN_CLASSES}
    for pos, tok in enumerate(tokenizer.convert_ids_to_tokens(rows.reshape(-1).tolist())):
        classes[token_class(tok)].append(pos)
    n_experts = layers[layer].n_experts
    return {k: torch.bincount(first[v], minlength=n_experts).float() / max(len(v), 1) for k, v in classes.items() if v}


@torch.no_grad()
def routing_map(model, input_ids: torch.Tensor, layer: int = 0) -> torch.Tensor:
    """Mixing weight of every expert for every token of one sequence: input_ids (T,) -> (T, E), zeros where unchosen."""
    layers = moe_layers(model)
    check_int("layer", layer, 0, len(layers) - 1)
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 1:
        raise ValueError(f"input_ids must be a 1-D tensor (T,), got {tuple(getattr(input_ids, 'shape', ()))}")
    model.eval()
    model(input_ids=input_ids[None].to(next(model.parameters()).device))
    m = layers[layer]
    return torch.zeros(len(input_ids), m.n_experts).scatter_(1, m.last_top_k_index.cpu(), m.last_weights.float().cpu())
