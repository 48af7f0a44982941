"""Stage 1 with `kmeans_tokens`: the tokens are plain k-means clusters of the Whisper encoder's pair means."""

import datasets
import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoFeatureExtractor, AutoModel, LlamaConfig, LlamaForCausalLM, TrainingArguments

from dualspeechlm.configuration_ustokenizer import USTokenizerConfig
from dualspeechlm.modeling_ustokenizer import RealLengthWhisperEncoder, USTokenizerModel
from dualspeechlm.processing.corpus import corpus_audio
from dualspeechlm.training import train_ustokenizer as stage1
from dualspeechlm.training.train_ustokenizer import USTokenizerRecipe, fit_kmeans_tokens, token_path_frames
from dualspeechlm.training.trainer import LossTermsTrainer
from dualspeechlm.training.understanding import UnderstandingCollator, USTokenizerForUnderstanding

pytestmark = pytest.mark.usefixtures("one_thread")

D_MODEL, LLM_WIDTH, CODES = 32, 24, 8
ENCODER = dict(d_model=D_MODEL, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=64,
               decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=64)


def kmeans_tokenizer(**overrides) -> USTokenizerModel:
    torch.manual_seed(0)
    return USTokenizerModel(USTokenizerConfig(**{
        **dict(encoder_config=ENCODER, num_conv_blocks=0, conv_hidden_size=D_MODEL, codebook_dim=D_MODEL,
               codebook_size=CODES, llm_hidden_size=LLM_WIDTH, kmeans_tokens=True), **overrides}))


def cached_dataset(lengths=(11, 8, 13, 6, 9, 10)) -> datasets.Dataset:
    """Rows as `understanding_dataset` gives them: random encoder outputs (odd lengths too) and prompt ids."""
    rng = np.random.default_rng(0)
    rows = [{"encoder_hidden_states": rng.standard_normal(n * D_MODEL).astype(np.float16), "num_frames": n,
             "before_ids": [1, 5], "after_ids": [7, 8], "answer_ids": [10 + i % 3, 2]} for i, n in enumerate(lengths)]
    return datasets.Dataset.from_list(rows).with_format("numpy")


def pair_means(states: torch.Tensor) -> torch.Tensor:
    """`[frames_50hz, d]` -> `[ceil(frames / 2), d]`: the mean of frames 2t and 2t+1, a missing last partner 0."""
    if len(states) % 2:
        states = torch.cat([states, states.new_zeros(1, states.shape[1])])
    return states.view(-1, 2, states.shape[1]).mean(1)


def distortion(frames: torch.Tensor, centroids: torch.Tensor) -> float:
    """Mean squared distance of each frame `[n, d]` to its nearest centroid `[k, d]`."""
    return torch.cdist(frames, centroids).min(-1).values.pow(2).mean().item()


def test_kmeans_tokens_need_a_token_path_that_can_be_the_pair_mean():
    tiny = USTokenizerConfig.tiny(kmeans_tokens=True)  # the tiny preset's shapes fit: no blocks, widths = d_model
    assert tiny.kmeans_tokens and USTokenizerConfig.from_dict(tiny.to_dict()).kmeans_tokens
    for bad in (dict(num_conv_blocks=2), dict(codebook_dim=16), dict(conv_hidden_size=512),
                dict(downsample_stride=3), dict(downsample_kernel_size=1)):
        with pytest.raises(ValueError, match=f"kmeans_tokens needs .* got {{'{next(iter(bad))}'"):
            USTokenizerConfig.tiny(kmeans_tokens=True, **bad)
    with pytest.raises(ValueError, match="num_conv_blocks"):
        USTokenizerConfig.paper(kmeans_tokens=True)
    USTokenizerConfig.paper(kmeans_tokens=False)


def test_tokens_are_the_nearest_centroid_of_the_pair_means_and_the_fit_is_seeded():
    dataset = cached_dataset()
    states = [torch.from_numpy(row["encoder_hidden_states"].astype(np.float32)).view(-1, D_MODEL) for row in dataset]
    means = [pair_means(s) for s in states]
    everything = torch.cat(means)
    model = kmeans_tokenizer()
    assert torch.equal(token_path_frames(model, dataset, max_frames=10_000), everything)
    torch.manual_seed(123)  # the fit's own seed decides, not the random state before
    fit_kmeans_tokens(model, dataset, max_frames=10_000, seed=0)
    again = kmeans_tokenizer()
    torch.manual_seed(456)
    fit_kmeans_tokens(again, dataset, max_frames=10_000, seed=0)
    assert torch.equal(model.quantizer.codebook, again.quantizer.codebook)

    batch = UnderstandingCollator(0)(list(dataset))
    out = model.eval().encode_cached(batch["encoder_hidden_states"], batch["encoder_lengths"])
    for i, item in enumerate(means):
        expected = torch.cdist(item, model.quantizer.codebook).argmin(-1)
        assert out.lengths[i] == len(item) and torch.equal(out.ids[i, : len(item)], expected)
        assert (out.ids[i, len(item) :] == model.config.ids_pad_value).all()

    # Lloyd iterations lower the distortion below that of random frames, where k-means starts
    random_frames = everything[torch.randperm(len(everything), generator=torch.Generator().manual_seed(0))[:CODES]]
    one_iteration = kmeans_tokenizer(kmeans_iters=1)
    fit_kmeans_tokens(one_iteration, dataset, max_frames=10_000, seed=0)
    fitted = distortion(everything, model.quantizer.codebook)
    assert fitted <= distortion(everything, one_iteration.quantizer.codebook) < distortion(everything, random_frames)
    assert fitted < 0.9 * distortion(everything, random_frames)

    # a sample bounds the frames k-means sees: drawn from the pair means, each at most once
    sample = token_path_frames(model, dataset, max_frames=20)
    assert len(sample) == 20 and len(torch.unique(sample, dim=0)) == 20
    assert all((everything == frame).all(-1).any() for frame in sample)


def test_training_leaves_the_token_path_alone_and_trains_the_rest(tmp_path):
    dataset = cached_dataset()
    tokenizer = kmeans_tokenizer()
    fit_kmeans_tokens(tokenizer, dataset, max_frames=10_000, seed=0)
    llm = LlamaForCausalLM(LlamaConfig(vocab_size=16, hidden_size=LLM_WIDTH, intermediate_size=48, num_hidden_layers=1,
                                       num_attention_heads=2, num_key_value_heads=2, pad_token_id=0, bos_token_id=1,
                                       eos_token_id=2))
    model = USTokenizerForUnderstanding(tokenizer, llm)
    assert not any(p.requires_grad for p in [*tokenizer.downsample.parameters(), *tokenizer.projection.parameters()])
    before = {name: value.clone() for name, value in tokenizer.state_dict().items()}
    args = TrainingArguments(output_dir=str(tmp_path / "run"), max_steps=4, per_device_train_batch_size=3,
                             learning_rate=1e-2, report_to=[], save_strategy="no", remove_unused_columns=False,
                             label_names=[], use_cpu=True, disable_tqdm=True)
    LossTermsTrainer(model=model, args=args, train_dataset=dataset, data_collator=UnderstandingCollator(0)).train()

    after = tokenizer.state_dict()
    token_path = [name for name in before if name.startswith(("downsample.", "projection.", "quantizer."))]
    assert {"downsample.weight", "projection.weight", "quantizer._codebook.embed"} <= set(token_path)
    assert all(torch.equal(before[name], after[name]) for name in token_path)  # no gradient, no EMA, no dead codes
    for trained in ("adapter_linear.weight", "adapter_conv.weight", "decoder_input.weight", "upsample.weight"):
        assert not torch.equal(before[trained], after[trained]), trained


def test_recipe_writes_a_kmeans_folder(tiny_corpus, whisper_dir, tmp_path, monkeypatch, capsys):
    with pytest.raises(SystemExit):
        stage1.main(["--kmeans-tokens", "--kmeans-frames", "600", "--print-config"])
    assert "kmeans_tokens: true\nkmeans_frames: 600\n" in capsys.readouterr().out

    fitted, fit = {}, stage1.fit_kmeans_tokens

    def fit_and_keep(ustokenizer, *args):  # the tokenizer right after the fit, before training
        fit(ustokenizer, *args)
        fitted.update(model=ustokenizer, state={k: v.clone() for k, v in ustokenizer.state_dict().items()})

    monkeypatch.setattr(stage1, "fit_kmeans_tokens", fit_and_keep)
    out = tmp_path / "ust"
    recipe = USTokenizerRecipe.tiny(
        corpus=str(tiny_corpus), whisper=str(whisper_dir), output_dir=str(out), cache_dir=str(tmp_path / "cache"),
        text_vocab_size=1000, llm_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1), llm_steps=4,
        tokenizer_config=dict(codebook_size=32), kmeans_tokens=True, kmeans_frames=600, steps=3, batch_size=4,
        logging_steps=1, warmup_steps=1, eval_limit=1, whisper_baseline=False)
    stage1.train_ustokenizer(recipe)

    model = AutoModel.from_pretrained(out).eval()
    assert type(model) is USTokenizerModel and model.config.kmeans_tokens  # the folder says what its tokens are
    saved = load_file(out / "model.safetensors")
    for name in ("downsample.weight", "projection.weight", "quantizer._codebook.embed"):
        assert torch.equal(saved[name], fitted["state"][name]), name  # fitted, then frozen through training
    assert not torch.equal(saved["adapter_linear.weight"], fitted["state"]["adapter_linear.weight"])

    extractor = AutoFeatureExtractor.from_pretrained(out)
    audio = corpus_audio(tiny_corpus, "test", limit=3)["audio"]
    features = extractor(audio, sampling_rate=16000, return_tensors="pt")
    ids = model.encode(**features)
    assert torch.equal(ids.ids, fitted["model"].eval().encode(**features).ids)  # saved and loaded: the same tokens
    encoder = RealLengthWhisperEncoder.from_whisper(whisper_dir).eval()
    with torch.no_grad():
        states = encoder(features.input_features, features.attention_mask).last_hidden_state
    frames = encoder.output_lengths(features.attention_mask.sum(-1))
    for i, length in enumerate(ids.lengths.tolist()):
        expected = torch.cdist(pair_means(states[i, : frames[i]]), model.quantizer.codebook).argmin(-1)
        assert length == len(expected) and torch.equal(ids.ids[i, :length], expected)
