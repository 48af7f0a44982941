"""PEFT LoRA on the DualSpeechLM backbone, as in the paper (r=16, alpha=32, dropout 0.05 on every
attention and MLP projection; token embeddings, LM head and AcousticGPT fully trained).

Projection names differ per backbone: Phi-3 fuses q/k/v into `qkv_proj` and gate/up into
`gate_up_proj`, so the usual ["q_proj", "v_proj"] would match nothing there.
"""

from __future__ import annotations

from peft import LoraConfig, PeftModel, get_peft_model

LORA_TARGETS = {
    "llama": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    "qwen2": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    "mistral": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    "phi3": ("qkv_proj", "o_proj", "gate_up_proj", "down_proj"),
}
FULLY_TRAINED = ("embed_tokens", "lm_head", "acoustic_gpt")


def lora_target_modules(model_type: str) -> tuple[str, ...]:
    if model_type not in LORA_TARGETS:
        raise ValueError(f"no LoRA target modules known for backbone {model_type!r}; known: {sorted(LORA_TARGETS)} "
                         "(add its attention and MLP projection names to LORA_TARGETS)")
    return LORA_TARGETS[model_type]


def apply_lora(model, r: int = 16, alpha: int = 32, dropout: float = 0.05) -> PeftModel:
    """`model` (a DualSpeechLMForConditionalGeneration) with LoRA adapters on its backbone's projections;
    the embeddings, LM head and AcousticGPT stay fully trainable (`modules_to_save`)."""
    targets = lora_target_modules(model.config.text_config.model_type)
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, bias="none",
                        target_modules=rf"language_model\..*\.({'|'.join(targets)})",  # regex: backbone only
                        modules_to_save=list(FULLY_TRAINED))
    return get_peft_model(model, config)


def merge_lora(model: PeftModel):
    """The plain model with the adapters merged into its weights (for release: no PEFT needed to load it)."""
    return model.merge_and_unload()


__all__ = ["LORA_TARGETS", "lora_target_modules", "apply_lora", "merge_lora"]
