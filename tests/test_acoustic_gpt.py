"""AcousticGPT: delay pattern, prefix-LM masking, padding invariance, KV-cache and batched decoding."""

import pytest
import torch

from dualspeechlm.configuration_dualspeechlm import AcousticGPTConfig
from dualspeechlm.modeling_acoustic_gpt import AcousticGPT, delay_pattern, undo_delay

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(codebook_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=64, dropout=0.0, condition_size=24, speaker_embedding_size=8)


def tiny_model(num_codebooks: int = 1, seed: int = 0, **overrides) -> AcousticGPT:
    torch.manual_seed(seed)
    return AcousticGPT(AcousticGPTConfig(**{**TINY, "num_codebooks": num_codebooks, **overrides})).eval()


def prefix_inputs(seed: int = 1):
    """Two items: 3 and 5 valid condition positions (item 0 right-padded)."""
    generator = torch.Generator().manual_seed(seed)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    return torch.randn(2, 8, generator=generator), torch.randn(2, 5, 24, generator=generator), mask




def test_config_vocabulary_and_validation():
    config = AcousticGPTConfig()
    assert (config.num_hidden_layers, config.num_attention_heads, config.hidden_size) == (6, 8, 1024)
    assert ((config.codebook_size, config.pad_id, config.no_speech_id, config.bos_id, config.eos_id)
            == (4096, 4096, 4097, 4098, 4099))
    assert config.vocab_size == 4100
    with pytest.raises(ValueError, match="divisible"):
        AcousticGPTConfig(hidden_size=30, num_attention_heads=4)
    with pytest.raises(ValueError, match="num_codebooks must be positive"):
        AcousticGPTConfig(num_codebooks=0)


def test_single_codebook_is_the_papers_sequence():
    config = AcousticGPTConfig(**TINY)
    codes, lengths = torch.tensor([[[5, 6, 7]], [[9, 0, 0]]]), torch.tensor([3, 1])
    inputs, targets, mask = delay_pattern(codes, lengths, config)
    bos, eos, pad = config.bos_id, config.eos_id, config.pad_id
    assert inputs.tolist() == [[[bos, 5, 6, 7]], [[bos, 9, eos, pad]]]
    assert targets.tolist() == [[[5, 6, 7, eos]], [[9, eos, pad, pad]]]
    assert mask.tolist() == [[[True] * 4], [[True, True, False, False]]]


def test_delay_pattern_layout_and_inverse():
    config = AcousticGPTConfig(**TINY, num_codebooks=3)
    codes, lengths = torch.randint(0, 16, (2, 3, 4)), torch.tensor([2, 4])
    inputs, targets, mask = delay_pattern(codes, lengths, config)
    assert targets.shape == (2, 3, 4 + 3)
    c, bos, eos, pad = codes[0], config.bos_id, config.eos_id, config.pad_id
    assert targets[0].tolist() == [[c[0, 0], c[0, 1], eos, pad, pad, pad, pad],
                                   [bos, c[1, 0], c[1, 1], eos, pad, pad, pad],
                                   [bos, bos, c[2, 0], c[2, 1], eos, pad, pad]]
    assert torch.equal(inputs[..., 1:], targets[..., :-1]) and (inputs[..., 0] == bos).all()
    assert mask.sum((1, 2)).tolist() == [3 * 3, 3 * 5]  # codes + EOS of each codebook, nothing else
    assert torch.equal(undo_delay(targets, lengths), codes * (torch.arange(4) < lengths[:, None, None]))


def test_prefix_is_bidirectional_and_steps_are_causal():
    model = tiny_model()
    embeds, mask = torch.randn(1, 6, 32), torch.ones(1, 6, dtype=torch.bool)
    base = model.transformer(embeds, mask, prefix_length=3)[0]
    later_prefix, later_step = embeds.clone(), embeds.clone()
    later_prefix[:, 2] += torch.randn(32)  # (a constant shift would vanish in the LayerNorms)
    later_step[:, 4] += torch.randn(32)
    assert not torch.allclose(model.transformer(later_prefix, mask, 3)[0][:, 0], base[:, 0])  # prefix sees ahead
    changed = model.transformer(later_step, mask, 3)[0]
    assert torch.allclose(changed[:, :4], base[:, :4], atol=1e-6) and not torch.allclose(changed[:, 4], base[:, 4])


def test_padding_and_masked_condition_positions_change_nothing():
    model = tiny_model(num_codebooks=2)
    speaker, states, mask = prefix_inputs()
    codes, lengths = torch.randint(0, 16, (2, 2, 6)), torch.tensor([4, 6])
    batched = model(speaker, states, mask, codes, lengths)
    garbage = states.clone()
    garbage[~mask] = 100.0
    assert torch.allclose(model(speaker, garbage, mask, codes, lengths).logits, batched.logits, atol=1e-5)
    for item in range(2):
        valid = int(mask[item].sum())
        alone = model(speaker[item:item + 1], states[item:item + 1, :valid], mask[item:item + 1, :valid],
                      codes[item:item + 1, :, : lengths[item]], lengths[item:item + 1])
        steps = int(lengths[item]) + 2
        assert torch.allclose(alone.logits[0], batched.logits[item, :steps], atol=1e-5)


@pytest.mark.parametrize("num_codebooks", [1, 3])
def test_kv_cache_and_batched_generation_equal_the_plain_ones(num_codebooks):
    model = tiny_model(num_codebooks)
    speaker, states, mask = prefix_inputs()
    cached = model.generate(speaker, states, mask, max_new_tokens=12)
    plain = model.generate(speaker, states, mask, max_new_tokens=12, use_cache=False)
    assert torch.equal(cached.codes, plain.codes) and torch.equal(cached.lengths, plain.lengths)
    assert cached.codes.shape == (2, num_codebooks, int(cached.lengths.max()))
    assert ((cached.codes >= 0) & (cached.codes < 16)).all() and (cached.lengths <= 12).all()
    for item in range(2):
        valid = int(mask[item].sum())
        alone = model.generate(speaker[item:item + 1], states[item:item + 1, :valid], mask[item:item + 1, :valid],
                               max_new_tokens=12)
        assert torch.equal(alone.lengths, cached.lengths[item:item + 1])
        assert torch.equal(alone.codes[0], cached.codes[item, :, : int(cached.lengths[item])])


def test_sampling_is_seedable():
    model = tiny_model(num_codebooks=2)
    speaker, states, mask = prefix_inputs()
    runs = []
    for _ in range(2):
        torch.manual_seed(3)
        runs.append(model.generate(speaker, states, mask, do_sample=True, top_k=5, temperature=0.8,
                                   max_new_tokens=10).codes)
    assert torch.equal(*runs)
    with pytest.raises(ValueError, match="unknown generation arguments"):
        model.generate(speaker, states, mask, top_kk=5)


def test_overfit_writes_the_taught_codes_and_no_speech():
    """Taught one speech item (2 codebooks, 5 frames) and one no-speech item, greedy decoding gives them back:
    the delay pattern, its forced edges and the undo agree end to end."""
    model = tiny_model(num_codebooks=2).train()
    speaker, states, mask = prefix_inputs()
    codes = torch.randint(0, 16, (2, 2, 5))
    codes[1] = model.config.no_speech_id
    lengths = torch.tensor([5, 1])
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(150):
        loss = model(speaker, states, mask, codes, lengths).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.05 * losses[0]
    out = model.eval().generate(speaker, states, mask, max_new_tokens=20)
    assert out.lengths.tolist() == [5, 0]
    assert torch.equal(out.codes[0], codes[0])


def test_too_long_prefix_or_codes_raise():
    model = tiny_model()
    speaker, states, mask = torch.randn(1, 8), torch.randn(1, 70, 24), torch.ones(1, 70, dtype=torch.bool)
    with pytest.raises(ValueError, match="leaves no room"):
        model.generate(speaker, states, mask)
    with pytest.raises(ValueError, match="longer than max_position_embeddings=64"):
        model(speaker, states[:, :10], mask[:, :10], torch.zeros(1, 1, 60, dtype=torch.long), torch.tensor([60]))
    out = model.generate(speaker, states[:, :50], mask[:, :50], max_new_tokens=100)
    assert out.lengths.item() <= 64 - 51 - 1  # capped at the position limit
