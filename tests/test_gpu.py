"""GPU-only checks of the frozen block's memory-efficient attention (issue 15).

Marked ``gpu`` and skipped without CUDA, so they never fail CI; ``scripts/gpu/run-gpu-check.sh``
runs them on a lent GPU machine. Sizes are the paper's: 240×240×152 at patch 8 is 17,100 tokens.
"""

from __future__ import annotations

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (run scripts/gpu/run-gpu-check.sh)"),
]

FULL_TOKENS = 30 * 30 * 19  # 240×240×152 at patch 8


def _peak_gib(fn) -> float:
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**30


@pytest.mark.parametrize("softcap", [None, 50.0], ids=["sdpa", "chunked-softcap"])
def test_attention_at_full_size_needs_no_score_matrix(softcap):
    """Gemma-2-9B's heads (16 query, 8 key/value, size 256), batch 4, 17,100 tokens, bf16, forward
    and backward: far below the 4·16·T² · 2 bytes ≈ 35 GiB that one bf16 score matrix would take
    (eager keeps several: scores, capped scores, float32 softmax)."""
    from medvisionllama.llm.attention_kernels import noncausal_attention_forward

    module = torch.nn.Module().eval()
    q = torch.randn(4, 16, FULL_TOKENS, 256, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    k = torch.randn(4, 8, FULL_TOKENS, 256, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn(4, 8, FULL_TOKENS, 256, device="cuda", dtype=torch.bfloat16, requires_grad=True)

    def step():
        out, _ = noncausal_attention_forward(module, q, k, v, None, scaling=256**-0.5, softcap=softcap)
        out.sum().backward()

    full_scores_gib = 4 * 16 * FULL_TOKENS**2 * 2 / 2**30
    peak = _peak_gib(step)
    # q, k, v, their gradients and the output are ~2.8 GiB; one chunk's scores ~1 GiB with temporaries
    assert peak < 10.0, f"peak {peak:.1f} GiB (one bf16 score matrix: {full_scores_gib:.0f} GiB)"
    assert torch.isfinite(q.grad).all() and torch.isfinite(k.grad).all()


@pytest.mark.parametrize("llm_name", ["llama3.1-8b", "gemma2-9b"])
def test_block_on_cuda_matches_eager(llm_name):
    """The default backend equals transformers' eager one on the GPU (small T), float32 and bf16."""
    from medvisionllama.llm import LLM_REGISTRY, FrozenLLMBlock

    spec = LLM_REGISTRY[llm_name]
    blocks = []
    for backend in (None, "eager"):
        with torch.device("meta"):
            block = FrozenLLMBlock(spec.make_config(), spec.family, spec.resolve_layer(None), attn_implementation=backend)
        block.init_random(seed=0)
        blocks.append(block.to("cuda"))
    x = torch.randn(2, 300, blocks[0].hidden_size, device="cuda")
    with torch.no_grad():
        torch.testing.assert_close(blocks[0](x), blocks[1](x), rtol=1e-4, atol=1e-4)
        for block in blocks:
            block.to(torch.bfloat16)
        ours, eager = blocks[0](x), blocks[1](x)
    rel = float((ours - eager).norm() / eager.norm())
    assert rel < 1e-2, f"bf16: relative L2 difference {rel:.2e}"


def test_training_step_in_bf16_is_finite_and_moves_weights():
    """One bf16-autocast step of ViT + a real-size Llama layer on the GPU."""
    from medvisionllama.models import ModelConfig, build_model

    torch.manual_seed(0)
    net = build_model(ModelConfig(model="llama3.1-8b-random", in_channels=4, num_classes=4, img_size=(64, 64, 40)),
                      device="cuda", load_weights=False)
    assert net.bridge.mixer.dtype == torch.bfloat16
    before = {k: v.detach().clone() for k, v in net.trainable_state_dict().items()}
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-3)
    x = torch.randn(2, 4, 64, 64, 40, device="cuda")
    y = torch.randint(0, 4, (2, 64, 64, 40), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits = net(x)
    loss = torch.nn.functional.cross_entropy(logits.float(), y)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    after = net.trainable_state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
