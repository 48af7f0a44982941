"""DualSpeechLM: config, losses, Chain-of-Condition, text and speech generation, wrapping an LLM, remote-code
loading."""

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from dualspeechlm.codecs import MelCodecConfig, MelCodecModel
from dualspeechlm.configuration_dualspeechlm import COC_MODES, DualSpeechLMConfig
from dualspeechlm.modeling_dualspeechlm import DualSpeechLMForConditionalGeneration

from conftest import run_without_package

pytestmark = pytest.mark.usefixtures("one_thread")

BACKBONES = ["llama", "qwen2", "phi3"]
SYSTEM = [1, 5, 6]  # BOS + a two-token "system message": attended, never in a given condition_mask


def tiny_model(backbone: str = "llama", seed: int = 0, **overrides) -> DualSpeechLMForConditionalGeneration:
    torch.manual_seed(seed)
    config = DualSpeechLMConfig.tiny(backbone, **overrides)
    return DualSpeechLMForConditionalGeneration(config).eval()


def make_batch(config: DualSpeechLMConfig, tasks, seed: int = 0) -> dict:
    """Right-padded training items [SYSTEM, prompt, answer, EOS]: a generation task reads text and answers
    `<audio><a_k>..</audio>`; an understanding task reads speech tokens and answers text."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for index, task in enumerate(tasks):
        text = torch.randint(10, 64, (3 + index % 2,), generator=generator).tolist()
        speech = [config.audio_start_token_id, *(config.speech_token_offset + torch.randint(
            0, config.num_speech_tokens, (5,), generator=generator)).tolist(), config.audio_end_token_id]
        prompt, answer = (text, speech) if task in config.generation_tasks else (speech + [7], text)
        rows.append((SYSTEM + prompt + answer + [2], len(SYSTEM), len(SYSTEM) + len(prompt)))
    width = max(len(ids) for ids, _, _ in rows)
    batch = {key: torch.zeros(len(rows), width, dtype=torch.long)
             for key in ("input_ids", "attention_mask", "condition_mask")}
    batch["labels"] = torch.full((len(rows), width), -100)
    for row, (ids, prompt_start, answer_start) in enumerate(rows):
        batch["input_ids"][row, : len(ids)] = torch.tensor(ids)
        batch["attention_mask"][row, : len(ids)] = 1
        batch["condition_mask"][row, prompt_start:answer_start] = 1
        batch["labels"][row, answer_start: len(ids)] = torch.tensor(ids[answer_start:])
    batch["acoustic_codes"] = torch.randint(0, config.codebook_size, (len(rows), config.num_codebooks, 6),
                                            generator=generator)
    batch["acoustic_lengths"] = torch.tensor([6 - index % 3 for index in range(len(rows))])
    batch["speaker_embeddings"] = torch.randn(len(rows), 512, generator=generator)
    batch["tasks"] = list(tasks)
    return batch


def left_padded_prompts(lengths=(5, 3), seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, length in enumerate(lengths):
        ids[row, -length:] = torch.randint(10, 64, (length,), generator=generator)
        mask[row, -length:] = 1
    return ids, mask


def test_config_paper_defaults_round_trip_and_errors(tmp_path):
    config = DualSpeechLMConfig.paper()
    assert config.text_config.model_type == "phi3" and config.text_config.hidden_size == 3072
    assert config.text_config.vocab_size == 32064 + 1026 and config.num_speech_tokens == 1024
    assert ((config.audio_start_token_id, config.audio_end_token_id, config.speech_token_offset)
            == (32064, 32065, 32066))
    assert (config.num_codebooks, config.codebook_size, config.speaker_embedding_size) == (1, 4096, 512)
    assert config.acoustic_config.condition_size == 3072 and config.coc_modes == COC_MODES
    assert (config.llm_loss_weight, config.acoustic_loss_weight, config.codec_frame_rate) == (1.0, 1.0, 40.0)
    codec = config.codec_config  # WavTokenizer, whose codes AcousticGPT writes: 1 x 4096 at 24 kHz / 600 = 40 per s
    assert (codec.model_type, codec.codebook_size) == ("wavtokenizer", 4096)
    assert codec.sampling_rate / codec.hop_length == 40
    assert DualSpeechLMConfig.from_dict(config.to_dict()).codec_config.to_dict() == codec.to_dict()
    assert config.speech_token_strings()[:3] == ["<audio>", "</audio>", "<a_0>"]
    assert len(config.speech_token_strings()) == 1026

    tiny = DualSpeechLMConfig.tiny("qwen2", num_codebooks=4, coc_modes=["both"])
    tiny.save_pretrained(tmp_path)
    loaded = DualSpeechLMConfig.from_pretrained(tmp_path)
    assert loaded.num_codebooks == 4 and loaded.coc_modes == ("both",) and loaded.text_config.model_type == "qwen2"
    assert loaded.to_dict() == tiny.to_dict()

    for overrides, match in [
        (dict(audio_start_token_id=70, audio_end_token_id=65, speech_token_offset=66), "outside the USToken range"),
        (dict(audio_start_token_id=64), "or none of them"),
        (dict(audio_start_token_id=64, audio_end_token_id=65, speech_token_offset=90),
         "do not fit the text vocabulary"),
        (dict(coc_tasks=("asr",)), "are not generation tasks"),
        (dict(coc_modes=("sometimes",)), "coc_modes must be a non-empty subset"),
        (dict(understanding_tasks=("asr", "tts")), "both as understanding and as generation"),
    ]:
        with pytest.raises(ValueError, match=match):
            DualSpeechLMConfig.tiny(**overrides)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_forward_returns_both_losses_and_their_sum(backbone):
    model = tiny_model(backbone)
    batch = make_batch(model.config, ["tts", "asr"])
    out = model(**batch)
    assert out.logits.shape == (*batch["input_ids"].shape, model.config.text_config.vocab_size)
    assert torch.isfinite(out.loss) and out.llm_loss > 0 and out.acoustic_loss > 0
    assert torch.allclose(out.loss, out.llm_loss + out.acoustic_loss)
    assert torch.allclose(model(batch["input_ids"][:, :5]).logits, out.logits[:, :5], atol=1e-5)  # causal
    backbone = model.language_model(batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
    assert torch.allclose(out.llm_loss, backbone.loss)
    other_speakers = dict(batch, speaker_embeddings=batch["speaker_embeddings"] * torch.tensor([[1.0], [5.0]]))
    assert torch.equal(model(**other_speakers).acoustic_loss, out.acoustic_loss)  # understanding item: zero speaker
    other_speakers["speaker_embeddings"] = batch["speaker_embeddings"] * torch.tensor([[5.0], [1.0]])
    assert not torch.equal(model(**other_speakers).acoustic_loss, out.acoustic_loss)


def test_without_the_acoustic_loss_acousticgpt_does_not_run():
    model = tiny_model(acoustic_loss_weight=0.0)
    batch = make_batch(model.config, ["tts", "asr"])
    model.acoustic_gpt.forward = lambda *args, **kwargs: pytest.fail("AcousticGPT ran though it learns nothing")
    out = model(**batch)
    assert out.acoustic_loss is None and out.hidden_states is None
    backbone = model.language_model(batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
    assert torch.allclose(out.loss, backbone.loss) and torch.allclose(out.llm_loss, backbone.loss)
    out.loss.backward()
    assert all(p.grad is None for p in model.acoustic_gpt.parameters())
    with pytest.raises(ValueError, match="target USTokens"):  # the batch is still checked
        model(**dict(batch, labels=torch.where(model.config.is_speech_token(batch["labels"]), -100, batch["labels"])))
    without_codes = model(**dict(batch, acoustic_codes=None, acoustic_lengths=None))  # AcousticGPT's targets: unread
    assert torch.equal(without_codes.loss, out.loss)


def test_without_semantic_supervision_the_llm_skips_the_target_ustokens():
    """The paper's ablation: the LLM's cross-entropy leaves out the target USTokens; AcousticGPT still reads them."""
    batch = make_batch(tiny_model().config, ["tts", "asr"])
    supervised, unsupervised = tiny_model(), tiny_model(semantic_supervision=False)
    modes = ["target", "both"]
    out, ablated = supervised(**batch, coc_modes=modes), unsupervised(**batch, coc_modes=modes)
    speech_labels = supervised.config.is_speech_token(batch["labels"])
    rest = supervised.language_model(batch["input_ids"], attention_mask=batch["attention_mask"],
                                     labels=batch["labels"].masked_fill(speech_labels, -100))
    assert torch.allclose(ablated.llm_loss, rest.loss) and not torch.allclose(ablated.llm_loss, out.llm_loss)
    assert torch.equal(ablated.acoustic_loss, out.acoustic_loss)
    assert torch.equal(ablated.acoustic_condition_mask, out.acoustic_condition_mask)


@pytest.mark.parametrize("tasks", [["asr", "s2tt", "ser", "sqa"], ["tts", "vc", "t2st", "sc"]],
                         ids=["understanding", "generation"])
def test_overfitting_one_batch_lowers_both_losses(tasks):
    model = tiny_model().train()
    batch = make_batch(model.config, tasks)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    history = []
    torch.manual_seed(0)
    for _ in range(40):
        out = model(**batch)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        history.append((out.llm_loss.item(), out.acoustic_loss.item()))
    assert all(np.isfinite(history).ravel())
    assert history[-1][0] < 0.5 * history[0][0] and history[-1][1] < 0.5 * history[0][1]


def test_chain_of_condition_uses_the_drawn_positions():
    model = tiny_model().train()
    batch = make_batch(model.config, ["tts", "tts", "tts", "t2st", "asr"])
    prompt = batch["condition_mask"].bool()
    target = model.config.is_speech_token(batch["labels"])
    out = model(**batch, coc_modes=["prompt", "target", "both", "prompt", "target"])
    assert out.coc_modes.tolist() == [0, 1, 2, 2, 2]  # T2ST is no CoC task and ASR has no speech: both
    expected = torch.stack([prompt[0], target[1], prompt[2] | target[2], prompt[3] | target[3], prompt[4]])
    assert torch.equal(out.acoustic_condition_mask, expected) and target[:4].any(-1).all()
    unmasked = model(**{**batch, "condition_mask": None}, coc_modes=["prompt"] * 5).acoustic_condition_mask
    default = batch["attention_mask"].bool() & (batch["labels"] == -100)  # the system tokens too
    assert torch.equal(unmasked[[0, 1, 2, 4]], default[[0, 1, 2, 4]])

    draws = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        draws.append(torch.stack([model(**batch).coc_modes for _ in range(10)]))
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])  # seedable
    assert set(draws[0][:, :3].unique().tolist()) == {0, 1, 2} and (draws[0][:, 3:] == 2).all()
    assert (model.eval()(**batch).coc_modes == 2).all()  # evaluation and inference: both
    no_coc = tiny_model(coc_modes=("both",)).train()
    assert (no_coc(**batch).coc_modes == 2).all()


def test_rendering_reads_the_ustokens_after_the_last_audio_start():
    """The written USTokens are those after the last <audio>, never those of a spoken prompt (VC)."""
    model = tiny_model()
    config = model.config

    def speech(*codes):
        return [config.speech_token_offset + code for code in codes]

    start, end = config.audio_start_token_id, config.audio_end_token_id
    sequences = torch.tensor([[11, start, *speech(1, 2, 3), end, 12, start, *speech(4, 5), end]])  # VC: prompt speech
    mask = torch.ones_like(sequences)
    out = model.render_speech(sequences, mask, mask.bool(), do_sample=False, max_new_tokens=4)
    assert out.ustokens.tolist() == [[4, 5]] and out.ustoken_lengths.tolist() == [2]


@pytest.mark.parametrize("backbone", BACKBONES)
def test_text_generation_is_the_backbones_batched_and_cached(backbone):
    model = tiny_model(backbone)
    ids, mask = left_padded_prompts()
    greedy = model.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=False)
    assert torch.equal(greedy, model.language_model.generate(ids, attention_mask=mask, max_new_tokens=6,
                                                             do_sample=False))
    assert torch.equal(greedy, model.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=False,
                                              use_cache=False))
    for row in range(2):
        alone = model.generate(ids[row:row + 1, mask[row] == 1], max_new_tokens=6, do_sample=False)
        assert torch.equal(alone[0, -6:], greedy[row, -6:])
    beam = dict(attention_mask=mask, max_new_tokens=6, num_beams=3, do_sample=False)
    assert torch.equal(model.generate(ids, **beam), model.language_model.generate(ids, **beam))
    sampled = []
    for _ in range(2):
        torch.manual_seed(1)
        sampled.append(model.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=True, top_k=20))
    assert torch.equal(*sampled)


@torch.no_grad()
def test_speech_generation_by_beam_search_checks_the_voice():
    model = tiny_model()
    ids, mask = left_padded_prompts()
    voices = torch.randn(2, 512, generator=torch.Generator().manual_seed(1))
    greedy = dict(do_sample=False, max_new_tokens=6, acoustic_max_new_tokens=2)
    beams = model.generate_speech(ids, mask, speaker_embeddings=voices, num_beams=3, **greedy)
    assert beams.sequences.shape[0] == 2 and beams.codes.shape[0] == 2  # the best beam of each prompt
    assert torch.equal(beams.speaker_embeddings, voices)
    with pytest.raises(ValueError, match="speaker_embeddings"):
        model.generate_speech(ids, mask, speaker_embeddings=voices[:1], **greedy)


def test_speech_generation_batched_cached_and_restricted():
    model = tiny_model()
    config = model.config
    with torch.no_grad():  # a random LLM never ends: make </audio> win where <a_30> would (item 0 after 2 USTokens)
        head = model.language_model.get_output_embeddings().weight
        head[config.audio_end_token_id] = 1.5 * head[config.speech_token_offset + 30]
    ids, mask = left_padded_prompts()
    speakers = torch.randn(2, 512)
    settings = dict(do_sample=False, max_new_tokens=8, acoustic_do_sample=False, acoustic_max_new_tokens=10)
    out = model.generate_speech(ids, mask, speaker_embeddings=speakers, **settings)
    written = out.sequences[:, ids.shape[1]:]
    assert (written[:, 0] == config.audio_start_token_id).all()
    ended = (written[:, 1:] == config.audio_end_token_id).cumsum(-1) > 0
    assert (config.is_speech_token(written[:, 1:]) | ended).all()  # USTokens, then </audio> and padding
    assert ended.sum(-1).tolist() == [6, 0] and written.shape[1] == 9  # <audio>, 2 USTokens, </audio>, pad
    assert out.codes.shape == (2, config.num_codebooks, int(out.code_lengths.max())) and (out.code_lengths <= 10).all()
    for row in range(2):  # the written USTokens, as ids 0..K-1
        tokens = written[row, 1:][config.is_speech_token(written[row, 1:]) & ~ended[row]] - config.speech_token_offset
        assert out.ustoken_lengths[row] == len(tokens) and torch.equal(out.ustokens[row, : len(tokens)], tokens)
    # the acoustic half alone, on the written sequences (attended up to </audio>; condition: prompt + USTokens)
    valid = ((written == config.audio_end_token_id).long().cumsum(-1)
             - (written == config.audio_end_token_id).long() == 0)
    condition = torch.cat([mask.bool(), valid & config.is_speech_token(written)], dim=1)
    rendered = model.render_speech(out.sequences, torch.cat([mask, valid.long()], dim=1), condition, speakers,
                                   do_sample=False, max_new_tokens=10)
    assert torch.equal(rendered.codes, out.codes) and torch.equal(rendered.code_lengths, out.code_lengths)
    plain = model.generate_speech(ids, mask, speaker_embeddings=speakers, use_cache=False, **settings)
    assert torch.equal(plain.sequences, out.sequences) and torch.equal(plain.codes, out.codes)
    with_audio = torch.cat([ids, torch.full_like(ids[:, :1], config.audio_start_token_id)], dim=1)
    again = model.generate_speech(with_audio, torch.cat([mask, mask[:, :1] * 0 + 1], 1), speaker_embeddings=speakers,
                                  **settings)
    assert torch.equal(again.codes, out.codes)
    for row in range(2):
        alone = model.generate_speech(ids[row:row + 1, mask[row] == 1], speaker_embeddings=speakers[row:row + 1],
                                      **settings)
        length = int(out.code_lengths[row])
        alone_written = alone.sequences[0, int(mask[row].sum()):]
        assert torch.equal(alone_written, written[row, : alone_written.shape[0]])
        assert alone.code_lengths.item() == length and torch.equal(alone.codes[0], out.codes[row, :, :length])


def tiny_codec(**overrides) -> MelCodecModel:
    return MelCodecModel(MelCodecConfig(**{**dict(hidden_size=16, latent_size=8, encoder_layers=1, decoder_layers=1,
                                                  num_quantizers=2, codebook_size=64, vocoder="griffin_lim",
                                                  griffin_lim_iterations=2), **overrides})).eval()


def test_speech_generation_decodes_through_the_models_codec():
    torch.manual_seed(0)
    codec = tiny_codec()
    model = tiny_model(**DualSpeechLMConfig.codec_kwargs(codec))
    model.set_codec(codec)
    assert model.codec_model is codec
    assert (model.config.codec_frame_rate, model.config.codec_sampling_rate) == (50, 16000)
    ids, mask = left_padded_prompts()
    out = model.generate_speech(ids, mask, output_audio=True, max_new_tokens=4, acoustic_max_new_tokens=6)
    assert torch.equal(out.waveform_lengths, out.code_lengths * 320)
    assert out.waveforms.shape == (2, int(out.waveform_lengths.max()))
    assert model.generate_speech(ids, mask, max_new_tokens=4, acoustic_max_new_tokens=6).waveforms is None
    waveforms, lengths = model.decode_codes(torch.randint(0, 64, (2, 2, 3)), torch.tensor([3, 0]))
    assert lengths.tolist() == [960, 0] and waveforms[1].abs().max() == 0  # no-speech items get no samples

    # a codec that reads USTokens gets the written ones
    torch.manual_seed(0)
    reading = tiny_codec(ustoken_vocab_size=model.config.num_speech_tokens)
    with torch.no_grad():
        reading.ustoken_embedding.weight.normal_()
    model.set_codec(reading)
    out = model.generate_speech(ids, mask, output_audio=True, max_new_tokens=4, acoustic_max_new_tokens=6)
    assert out.ustoken_lengths.tolist() == [4, 4]  # a random LLM writes until max_new_tokens
    with_tokens = reading.decode(out.codes, out.code_lengths.clamp(min=1), out.ustokens, out.ustoken_lengths)
    torch.testing.assert_close(out.waveforms, with_tokens.waveforms * (out.code_lengths > 0)[:, None])
    assert not torch.allclose(out.waveforms, reading.decode(out.codes, out.code_lengths.clamp(min=1)).waveforms)
    assert out.speaker_embeddings is None  # no voice asked for: the codec hears none

    # a codec that reads the voice gets the speaker embeddings asked for
    torch.manual_seed(0)
    voiced = tiny_codec(ustoken_vocab_size=model.config.num_speech_tokens, speaker_embedding_size=512)
    with torch.no_grad():
        voiced.ustoken_embedding.weight.normal_()
        voiced.speaker_projection.weight.normal_()
    model.set_codec(voiced)
    speakers = torch.randn(2, 512)
    out = model.generate_speech(ids, mask, speaker_embeddings=speakers, output_audio=True, max_new_tokens=4,
                                acoustic_max_new_tokens=6)
    assert torch.equal(out.speaker_embeddings, speakers)
    expected = voiced.decode(out.codes, out.code_lengths.clamp(min=1), out.ustokens, out.ustoken_lengths, speakers)
    torch.testing.assert_close(out.waveforms, expected.waveforms * (out.code_lengths > 0)[:, None])
    unvoiced = voiced.decode(out.codes, out.code_lengths.clamp(min=1), out.ustokens, out.ustoken_lengths)
    assert not torch.allclose(out.waveforms, unvoiced.waveforms * (out.code_lengths > 0)[:, None])

    # a codec that renders the tokens and the voice alone: AcousticGPT does not run, the speech lasts as its tokens
    voiced.config.ustoken_decode_codebooks = 0
    model.acoustic_gpt.generate = lambda *args, **kwargs: pytest.fail("AcousticGPT ran though its codes go unread")
    out = model.generate_speech(ids, mask, speaker_embeddings=speakers, output_audio=True, max_new_tokens=4)
    assert out.codes is None and out.code_lengths is None and torch.equal(out.speaker_embeddings, speakers)
    assert out.waveform_lengths.tolist() == (out.ustoken_lengths * 2 * 320).tolist()  # 2 codec frames per USToken
    any_codes = torch.randint(0, 64, (2, 2, 8))
    expected = voiced.decode(any_codes, torch.ones(2, dtype=torch.long), out.ustokens, out.ustoken_lengths, speakers)
    torch.testing.assert_close(out.waveforms, expected.waveforms)
    # the same rendering from written tokens alone (how the evaluation scores the semantic-only path)
    waveforms, lengths = model.decode_ustokens(voiced, out.ustokens, out.ustoken_lengths, speakers)
    torch.testing.assert_close(waveforms, out.waveforms)
    assert torch.equal(lengths, out.waveform_lengths)
    with pytest.raises(ValueError, match="does not decode USTokens alone"):
        model.decode_ustokens(codec, out.ustokens, out.ustoken_lengths)
    # its codes need not be the model's: the semantic-only comparison may use any USToken-alone decoder
    other_codes = MelCodecModel(MelCodecConfig(**{**voiced.config.to_dict(), "num_quantizers": 3})).eval()
    other_codes.load_state_dict(voiced.state_dict(), strict=False)
    waveforms, lengths = model.decode_ustokens(other_codes, out.ustokens, out.ustoken_lengths, speakers)
    assert torch.equal(lengths, out.waveform_lengths) and waveforms.shape == out.waveforms.shape
    # an item whose answer holds no USToken gets no speech
    config = model.config
    answer = torch.tensor([[config.audio_start_token_id, config.speech_token_offset + 7, config.audio_end_token_id],
                           [config.audio_start_token_id, config.audio_end_token_id, config.text_config.pad_token_id]])
    sequences, full_mask = torch.cat([ids, answer], 1), torch.cat([mask, torch.tensor([[1, 1, 1], [1, 1, 0]])], 1)
    rendered = model.render_speech(sequences, full_mask, full_mask.bool() & (sequences != config.audio_start_token_id),
                                   speakers, output_audio=True)
    assert rendered.ustoken_lengths.tolist() == [1, 0] and rendered.waveform_lengths.tolist() == [640, 0]
    arrays = rendered.audio_arrays()  # padding cut, empty where no speech was written
    assert [a.shape for a in arrays] == [(640,), (0,)] and arrays[0].dtype == np.float32
    assert np.array_equal(arrays[0], rendered.waveforms[0, :640].numpy())
    with pytest.raises(ValueError, match="output_audio=True"):
        type(rendered)(ustokens=rendered.ustokens).audio_arrays()  # an output generated without audio
    # a model whose AcousticGPT was never trained speaks through such a codec and refuses one that reads codes
    config.acoustic_loss_weight = 0.0
    assert model.generate_speech(ids, mask, speaker_embeddings=speakers, output_audio=True,
                                 max_new_tokens=4).codes is None
    voiced.config.ustoken_decode_codebooks = 1
    with pytest.raises(ValueError, match="acoustic_loss_weight 0.*decodes the USTokens alone"):
        model.generate_speech(ids, mask, speaker_embeddings=speakers, output_audio=True, max_new_tokens=4)


def test_the_codec_is_a_sub_model_saved_loaded_and_frozen_with_the_model(tmp_path):
    torch.manual_seed(0)
    codec = tiny_codec(vocoder="neural", vocoder_hidden_size=8, vocoder_intermediate_size=16, vocoder_layers=1)
    model = tiny_model(**DualSpeechLMConfig.codec_kwargs(codec))
    model.set_codec(codec)
    assert model.config.codec_config.to_dict() == codec.config.to_dict()
    assert not any(p.requires_grad for p in model.codec_model.parameters())
    model.train()
    assert model.acoustic_gpt.training and not model.codec_model.training  # its quantizer would update codebooks
    model.eval()
    model.save_pretrained(tmp_path)
    assert not (tmp_path / "codec").exists()  # one set of weights: the codec's inside model.safetensors
    loaded = DualSpeechLMForConditionalGeneration.from_pretrained(tmp_path).eval()
    assert type(loaded.codec_model) is MelCodecModel and not any(p.requires_grad for p in loaded.parameters()
                                                                  if p in set(loaded.codec_model.parameters()))
    expected = model.state_dict()
    assert all(torch.equal(value, expected[name]) for name, value in loaded.state_dict().items())
    ids, mask = left_padded_prompts()
    speech = [m.generate(ids, mask, output_audio=True, max_new_tokens=4, acoustic_max_new_tokens=6,
                         do_sample=False, acoustic_do_sample=False) for m in (model, loaded)]
    assert torch.equal(speech[0].waveforms, speech[1].waveforms) and speech[0].waveforms.abs().sum() > 0
    # text generation is untouched by output_audio's default
    text = loaded.generate(ids, attention_mask=mask, max_new_tokens=3, do_sample=False)
    assert text.shape == (2, ids.shape[1] + 3)

    # a lower dtype reaches the LLM and AcousticGPT; the codec (spectral transforms, vocoder) stays float32 and speaks
    half = DualSpeechLMForConditionalGeneration.from_pretrained(tmp_path, dtype=torch.bfloat16,
                                                                device_map="cpu").eval()
    assert half.language_model.dtype == half.acoustic_gpt.speaker_projection.weight.dtype == torch.bfloat16
    assert {p.dtype for p in half.codec_model.parameters()} == {torch.float32}
    assert half.codec_model.vocoder.window.dtype == half.codec_model.mel.filters.dtype == torch.float32
    out = half.generate(ids, mask, output_audio=True, max_new_tokens=4, acoustic_max_new_tokens=6)
    assert out.waveforms.dtype == torch.float32 and torch.isfinite(out.waveforms).all()


def test_a_model_is_never_paired_with_a_codec_of_other_codes():
    torch.manual_seed(0)
    model = tiny_model(**DualSpeechLMConfig.codec_kwargs(tiny_codec()))
    ids, mask = left_padded_prompts()
    for other in (tiny_codec(codebook_size=32), tiny_codec(num_quantizers=3), tiny_codec(hop_length=160)):
        with pytest.raises(ValueError, match="use reset_acoustic_gpt"):
            model.set_codec(other)
    # moving onto another codec: a fresh AcousticGPT for its codes, the LLM kept
    llm = {name: value.clone() for name, value in model.language_model.state_dict().items()}
    other = tiny_codec(num_quantizers=1, codebook_size=24)
    model.reset_acoustic_gpt(other)
    assert (model.config.num_codebooks, model.config.codebook_size) == (1, 24) and model.codec_model is other
    assert model.acoustic_gpt.config.vocab_size == 28
    assert all(torch.equal(value, llm[name]) for name, value in model.language_model.state_dict().items())
    speech = model.generate(ids, mask, output_audio=True, max_new_tokens=4, acoustic_max_new_tokens=6)
    assert speech.codes.shape[1] == 1
    # without a codec the model writes tokens and codes, and says why it writes no audio
    bare = tiny_model()
    assert bare.codec_model is None and bare.config.codec_config is None
    assert bare.generate_speech(ids, mask, max_new_tokens=4, acoustic_max_new_tokens=6).codes is not None
    with pytest.raises(ValueError, match="holds no codec"):
        bare.generate(ids, mask, output_audio=True, max_new_tokens=4)


def word_tokenizer(words: list[str]) -> PreTrainedTokenizerFast:
    vocab = {word: index for index, word in enumerate(["<unk>", *words])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>")


def test_from_text_model_extends_tokenizer_and_keeps_the_weights():
    torch.manual_seed(0)
    llm = LlamaForCausalLM(LlamaConfig(vocab_size=24, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                       num_attention_heads=4, num_key_value_heads=2)).eval()
    text = torch.tensor([[3, 7, 1, 12]])
    before = llm(text).logits
    tokenizer = word_tokenizer([f"w{index}" for index in range(19)])  # 20 ids: the model's rows 20..23 are padding
    acoustic = DualSpeechLMConfig.tiny().acoustic_config
    model = DualSpeechLMForConditionalGeneration.from_text_model(llm, tokenizer, num_speech_tokens=8,
                                                                 acoustic_config=acoustic).eval()
    config = model.config
    assert (config.audio_start_token_id, config.audio_end_token_id, config.speech_token_offset) == (20, 21, 22)
    assert config.text_config.vocab_size == 30 and model.get_input_embeddings().weight.shape[0] == 30
    assert tokenizer("w3 <audio><a_0><a_7></audio>").input_ids == [4, 20, 22, 29, 21]
    assert torch.allclose(model(text).logits[..., :24], before, atol=1e-6)  # the pretrained weights survived
    plain = DualSpeechLMForConditionalGeneration.from_text_model(
        LlamaForCausalLM(LlamaConfig(vocab_size=24, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                     num_attention_heads=4)), num_speech_tokens=8, acoustic_config=acoustic)
    plain_config = plain.config
    assert ((plain_config.audio_start_token_id, plain_config.speech_token_offset, plain_config.text_config.vocab_size)
            == (24, 26, 34))


FRESH_PROCESS = """
import numpy as np, torch
from transformers import AutoModel
folder, arrays = sys.argv[1], np.load(sys.argv[2])
model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
batch = {key: torch.from_numpy(arrays[key]) for key in arrays.files}
out = model(**batch, tasks=["tts", "asr"])
ids, mask = batch["input_ids"][:, :5], batch["attention_mask"][:, :5]
speech = model.generate_speech(ids, mask, do_sample=False, max_new_tokens=4, acoustic_do_sample=False,
                               acoustic_max_new_tokens=5)
np.savez(sys.argv[2] + ".out.npz", logits=out.logits.detach().numpy(),
         acoustic_logits=out.acoustic_logits.detach().numpy(), codes=speech.codes.numpy())
"""


def test_saved_folder_loads_in_a_fresh_process_without_the_package(tmp_path):
    model = tiny_model("qwen2", text_overrides=dict(tie_word_embeddings=True))
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    files = {path.name for path in folder.iterdir()}
    assert "model.safetensors" in files and not {name for name in files if name.endswith((".bin", ".pt", ".pth"))}
    assert {"modeling_dualspeechlm.py", "modeling_acoustic_gpt.py", "configuration_dualspeechlm.py",
            "registration.py"} <= files
    batch = make_batch(model.config, ["tts", "asr"])
    arrays = {key: batch[key].numpy() for key in ("input_ids", "attention_mask", "labels", "condition_mask",
                                                  "acoustic_codes", "acoustic_lengths", "speaker_embeddings")}
    np.savez(tmp_path / "batch.npz", **arrays)
    result = run_without_package(FRESH_PROCESS, folder, tmp_path / "batch.npz", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = np.load(tmp_path / "batch.npz.out.npz")
    out = model(**batch)
    speech = model.generate_speech(batch["input_ids"][:, :5], batch["attention_mask"][:, :5], do_sample=False,
                                   max_new_tokens=4, acoustic_do_sample=False, acoustic_max_new_tokens=5)
    np.testing.assert_allclose(loaded["logits"], out.logits.detach().numpy(), atol=1e-5)
    np.testing.assert_allclose(loaded["acoustic_logits"], out.acoustic_logits.detach().numpy(), atol=1e-5)
    assert np.array_equal(loaded["codes"], speech.codes.numpy())


def test_bad_inputs_raise_clear_errors():
    model = tiny_model()
    batch = make_batch(model.config, ["tts", "asr"])
    ids, mask = left_padded_prompts()
    cases = [
        (dict(batch, input_ids=torch.zeros(2, 0, dtype=torch.long), attention_mask=None, labels=None,
              condition_mask=None), "non-empty"),
        (dict(input_ids=torch.ones(1, 300, dtype=torch.long)),
         "longer than the backbone's max_position_embeddings=256"),
        (dict(batch, tasks=["tts", "karaoke"]), r"unknown task\(s\) \['karaoke'\]"),
        (dict(batch, tasks=["tts"]), "list of 2 task names"),
        (dict(batch, tasks=None), "acoustic_codes were given without tasks"),
        (dict(batch, acoustic_codes=None), "generation tasks need acoustic_codes"),
        (dict(batch, acoustic_codes=batch["acoustic_codes"][:, :1]),
         r"acoustic_codes must have shape \[batch=2, num_codebooks=2"),
        (dict(batch, acoustic_lengths=torch.tensor([9, 1])), r"acoustic_lengths \[9, 1\] must lie in \[1, 6\]"),
        (dict(batch, acoustic_codes=batch["acoustic_codes"] + 64), r"acoustic codes must lie in \[0, 64\)"),
        (dict(batch, speaker_embeddings=torch.zeros(2, 256)), r"speaker_embeddings must have shape \[2, 512\]"),
        (dict(batch, labels=batch["labels"][:, :-1]), "labels must have shape"),
        (dict(batch, labels=torch.where(model.config.is_speech_token(batch["labels"]), -100, batch["labels"])),
         "needs its target USTokens"),
        (dict(batch, coc_modes=["prompt", "sometimes"]), "coc_modes must name one of"),
    ]
    for kwargs, match in cases:
        with pytest.raises(ValueError, match=match):
            model(**kwargs)
    with pytest.raises(ValueError, match="left-padded"):
        model.generate_speech(ids.flip(1), mask.flip(1))
    with pytest.raises(ValueError, match="longer than the backbone's"):
        model.generate_speech(ids, mask, max_new_tokens=300)
