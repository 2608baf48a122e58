"""GLM-4.7-Flash (`Glm4MoeLiteForCausalLM`): DeepSeek's nextn layer at `num_hidden_layers`, MLA attention.

Facts: vLLM 0.33.0's `glm4_moe_lite_mtp.py` and `glm4_moe_lite.py`. The MTP layer is a
`Glm4MoeLiteDecoderLayer`: DeepSeek-V2 multi-head latent attention (the model type is on vLLM's MLA
list) and GLM's MoE block (router with correction bias, routed and shared experts), under the
same nextn head as DeepSeek-V3. The tensor table, geometry and module prefixes are DeepSeek's; the
loader differs in one rule: names outside the MTP layers are skipped, a top-level embedding too.
No public checkpoint of this family has been read here.
"""

from __future__ import annotations

from dataclasses import replace

from pipeline.families import loader_names
from pipeline.families.deepseek_v3 import DEEPSEEK_V3

GLM4_MOE_LITE = replace(
    DEEPSEEK_V3,
    name="glm4_moe_lite",
    summary="GLM-4.7-Flash: 1 MoE MTP layer with MLA attention at num_hidden_layers; its embed_tokens and shared_head.head are optional copies",
    vllm_class="Glm4MoeLiteMTP",
    route_model_types=(),
    route_architectures=("Glm4MoeLiteForCausalLM",),
    replay=loader_names.glm4_moe_lite_mtp,
    vllm_file="glm4_moe_lite_mtp.py",
    facts=(
        "vLLM 0.33.0 config/speculative.py:858-867: architectures[0] == Glm4MoeLiteForCausalLM routes to Glm4MoeLiteMTP (architecture Glm4MoeLiteMTPModel); the draft config gets num_hidden_layers: 0, but the module numbers its layers from the target's config (glm4_moe_lite_mtp.py:163-177)",
        "vLLM 0.33.0 transformers_utils/model_arch_config_convertor.py:294-327: model_type glm4_moe_lite with kv_lora_rank uses MLA, so the layer is DeepSeek-V2's MLA attention (glm4_moe_lite.py:100-106, 140-166; deepseek_v2.py:1051-1112)",
        "vLLM 0.33.0 glm4_moe_lite_mtp.py:274-454: model.layers.{num_hidden_layers+i}. is read (utils.py:575-601); every other name is skipped (:300-302), a top-level model.embed_tokens.weight included; q_a_proj and kv_a_proj_with_mqa fuse into fused_qkv_a_proj, gate/up into gate_up_proj; routed experts load into experts.routed_experts.{w13,w2}_weight",
        "vLLM 0.33.0 glm4_moe_lite_mtp.py:456-485: the layer's embed_tokens becomes model.embed_tokens (first MTP layer only); the rest of the decoder gets .mtp_block.",
        "vLLM 0.33.0 glm4_moe.py:141-150: the router's e_score_correction_bias is always built",
        "vLLM 0.33.0 glm4_moe_lite_mtp.py:96 and :124-133: the module is built with the target's quant_config under the layer's own prefix (no .mtp_block.), its head as model.layers.L.head (:68-82)",
        "vLLM 0.33.0 llm_base_proposer.py:1418-1575: embed_tokens and shared_head.head are replaced by the target's",
        "unverified: checkpoint layout unverified (no public checkpoint read); a config with index_topk builds a sparse-attention indexer (glm4_moe_lite_mtp.py:104) whose tensors this family does not know and refuses",
    ),
    card_notes=(
        "vLLM reads only `model.layers.{num_hidden_layers}.*` from this draft and builds it with the target's quantization config: the MTP loads in BF16 only if the target's exclude list covers that layer.",
        "vLLM replaces the layer's `embed_tokens` and `shared_head.head` with the target's after loading.",
        "The checkpoint layout of this family has not been checked against a public checkpoint.",
    ),
)
