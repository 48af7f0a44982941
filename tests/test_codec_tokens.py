"""Codec tokens, the paper's Baseline-Acoustic speech tokens: one codebook of a codec, in the USTokenizer's place."""

import json

import numpy as np
import pytest
import torch
import torchaudio
from transformers import AutoModel

from dualspeechlm.modeling_codec_tokens import CodecTokensModel, load_speech_tokenizer
from dualspeechlm.modeling_ustokenizer import USTokenizerModel
from dualspeechlm.pipelines_dualspeechlm import save_for_pipelines
from dualspeechlm.processing_dualspeechlm import DualSpeechLMProcessor
from dualspeechlm.testing_utils import tiny_random_model_and_processor

from conftest import run_without_package

pytestmark = pytest.mark.usefixtures("one_thread")

K = 64  # the tiny codec's codes per codebook: the model's speech tokens


@pytest.fixture(scope="module")
def parts():
    """(model, processor) whose speech tokens are the first codebook of the model's own codec."""
    model, processor = tiny_random_model_and_processor(num_speech_tokens=K)
    model.codec_model.encode(0.1 * torch.randn(2, 16000))  # its k-means init, once, before anything reads codes
    tokens = CodecTokensModel.from_codec(model.codec_model)
    processor = DualSpeechLMProcessor(processor.feature_extractor, processor.tokenizer, tokens,
                                      processor.speaker_encoder)
    return model, processor


@pytest.fixture(scope="module")
def clips():
    generator = torch.Generator().manual_seed(0)
    return [0.1 * torch.randn(n, generator=generator) for n in (16000, 5000, 11000)]


def test_tokens_are_the_codecs_first_codebook_whatever_the_batch(parts, clips):
    model, processor = parts
    tokens = processor.ustokenizer
    ids = tokens.tokenize(clips)
    assert [len(row) for row in ids] == [50, 16, 35]  # one per 20 ms codec frame, the last one started
    for clip, row in zip(clips, ids):
        alone = model.codec_model.encode(clip[None], sampling_rate=16000)
        assert row == alone.codes[0, 0, : int(alone.lengths[0])].tolist()
        assert all(0 <= i < K for i in row)
    assert (tokens.config.codebook_size, tokens.config.tokens_per_second) == (K, 50.0)
    with pytest.raises(ValueError, match="codebook 2 is not one of the codec's 2"):
        CodecTokensModel.from_codec(model.codec_model, codebook=2)


def test_saved_and_loaded_they_give_the_same_tokens(parts, clips, tmp_path):
    tokens = parts[1].ustokenizer
    tokens.save_pretrained(tmp_path / "tokens")
    for loaded in (load_speech_tokenizer(tmp_path / "tokens"), AutoModel.from_pretrained(tmp_path / "tokens")):
        assert isinstance(loaded, CodecTokensModel) and loaded.tokenize(clips) == tokens.tokenize(clips)
        assert not any(parameter.requires_grad for parameter in loaded.parameters())
    parts[0].codec_model.save_pretrained(tmp_path / "codec")
    with pytest.raises(ValueError, match="not a speech tokenizer"):
        load_speech_tokenizer(tmp_path / "codec")
    # training mode leaves the codec's codebooks alone
    tokens.train()
    assert not tokens.codec_model.training
    assert tokens.tokenize(clips) == load_speech_tokenizer(tmp_path / "tokens").tokenize(clips)
    tokens.eval()


def test_a_ustokenizer_folder_still_loads_as_one(tmp_path):
    _, processor = tiny_random_model_and_processor()
    processor.ustokenizer.save_pretrained(tmp_path)
    assert isinstance(load_speech_tokenizer(tmp_path), USTokenizerModel)


def test_the_processor_tokenizes_audio_with_the_codec(parts, clips):
    processor = parts[1]
    at_8k = torchaudio.functional.resample(clips[0], 16000, 8000)
    resampled = torchaudio.functional.resample(at_8k, 8000, 16000)
    assert processor.speech_ids(at_8k, sampling_rate=8000) == processor.ustokenizer.tokenize([resampled])
    inputs = processor("asr", audio=[c.numpy() for c in clips[:2]], sampling_rate=16000)
    speech = inputs["input_ids"] - processor.speech_token_offset
    written = [row[(row >= 0) & (row < K)].tolist() for row in speech]
    assert written == processor.ustokenizer.tokenize(clips[:2])
    for bad, message in ((torch.zeros(2, 16000), "only mono"), (torch.zeros(0), "empty"),
                         (torch.full((16000,), float("nan")), "NaN"), (torch.zeros(16000 * 31), "longer than")):
        with pytest.raises(ValueError, match=message):
            processor.speech_ids(bad, sampling_rate=16000)
    with pytest.raises(ValueError, match="sampling_rate is required"):
        processor.speech_ids(clips[0], sampling_rate=None)


def test_a_saved_model_folder_tokenizes_with_the_codec_without_the_package(parts, clips, tmp_path):
    model, processor = parts
    folder = tmp_path / "model"
    save_for_pipelines(model, processor, folder)
    np.save(tmp_path / "clip.npy", clips[1].numpy())
    loaded = DualSpeechLMProcessor.from_pretrained(folder)
    assert isinstance(loaded.ustokenizer, CodecTokensModel)
    assert loaded.speech_ids(clips[1], sampling_rate=16000) == processor.speech_ids(clips[1], sampling_rate=16000)
    script = """
import json, numpy as np
from transformers import AutoProcessor
folder, clip, out = sys.argv[1:4]
processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
json.dump({"ids": processor.speech_ids(np.load(clip), sampling_rate=16000),
           "tokenizer": type(processor.ustokenizer).__name__}, open(out, "w"))
"""
    done = run_without_package(script, folder, tmp_path / "clip.npy", tmp_path / "out.json", tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    remote = json.loads((tmp_path / "out.json").read_text())
    assert remote == {"ids": processor.speech_ids(clips[1], sampling_rate=16000), "tokenizer": "CodecTokensModel"}
