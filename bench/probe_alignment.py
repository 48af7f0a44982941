"""Where a trained DualSpeechLM's heads look while writing TTS USTokens: for every layer and head, the attention
prior's -log mass on the text band (config.alignment_*), over the first 64 validation TTS items of a main-job checkout.

    python bench/probe_alignment.py <model folder> <checkout with data/ and models/>   # about a minute, one thread
"""
import sys, torch
from dualspeechlm.modeling_dualspeechlm import DualSpeechLMForConditionalGeneration
from dualspeechlm.training.train_dualspeechlm import DualSpeechLMRecipe, cached_splits, load_parts
from dualspeechlm.training.multitask import TaskExamples, DualSpeechLMCollator
from transformers import AutoTokenizer
torch.set_num_threads(1)
folder, root = sys.argv[1], sys.argv[2]
recipe = DualSpeechLMRecipe.tiny(corpus=f"{root}/data/corpus", ustokenizer=f"{root}/models/ustokenizer",
                                 codec=f"{root}/models/mel-codec", speaker_encoder=f"{root}/models/speaker-encoder",
                                 cache_dir=f"{root}/data/encoder_cache", acoustic_loss_weight=0.0, tasks=("tts",))
examples = TaskExamples(cached_splits(recipe, "validation", load_parts(recipe)), recipe.tasks)
model = DualSpeechLMForConditionalGeneration.from_pretrained(folder)
tokenizer = AutoTokenizer.from_pretrained(folder)
batch = DualSpeechLMCollator(tokenizer, model.config)([examples[i] for i in range(64)])
model.config.alignment_loss_weight = 1.0
model.train()
for module in model.modules():
    if isinstance(module, torch.nn.Dropout): module.p = 0.0
with torch.no_grad():
    out = model(**batch, output_attentions=True)
    print(f"llm loss {out.llm_loss.item():.3f}")
    for layer, att in enumerate(out.attentions):
        losses = [model.alignment_loss(att[:, h], batch["spoken_text_mask"], batch["labels"]).item() for h in range(att.shape[1])]
        print(f"layer {layer}: -log band mass per head " + " ".join(f"{v:.2f}" for v in losses))
