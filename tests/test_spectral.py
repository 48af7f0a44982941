import torch

from dualspeechlm.spectral import LogMelSpectrogram, griffin_lim, masked_istft, stft

N_FFT, HOP = 1024, 320
WINDOW = torch.hann_window(N_FFT)


def test_masked_istft_inverts_stft():
    torch.manual_seed(0)
    audio = torch.randn(2, 16000) * 0.1
    frames = 16000 // HOP
    rebuilt = masked_istft(stft(audio, N_FFT, HOP, WINDOW)[..., :frames], torch.tensor([frames, frames]), N_FFT, HOP,
                           WINDOW)
    torch.testing.assert_close(rebuilt[:, : frames * HOP - N_FFT], audio[:, : frames * HOP - N_FFT], atol=1e-5, rtol=0)


def test_masked_istft_ignores_frames_past_each_length():
    torch.manual_seed(0)
    spectrum = torch.polar(torch.rand(2, N_FFT // 2 + 1, 40), torch.rand(2, N_FFT // 2 + 1, 40))
    lengths = torch.tensor([40, 17])
    batch = masked_istft(spectrum, lengths, N_FFT, HOP, WINDOW)
    alone = masked_istft(spectrum[1:, :, :17], lengths[1:], N_FFT, HOP, WINDOW)
    torch.testing.assert_close(batch[1, : 17 * HOP], alone[0], atol=1e-6, rtol=0)
    assert batch[1, 17 * HOP :].abs().max() == 0


def test_griffin_lim_ignores_padding_and_recovers_a_tone():
    t = torch.arange(16000) / 16000
    tone = 0.5 * torch.sin(2 * torch.pi * 440 * t)
    magnitude = stft(tone[None], N_FFT, HOP, WINDOW).abs()[..., :50]
    pair = torch.cat([magnitude, magnitude * torch.tensor(0.5)])
    lengths = torch.tensor([50, 30])
    both = griffin_lim(pair, lengths, N_FFT, HOP, WINDOW, iterations=32)
    loud_padding = pair.clone()
    loud_padding[1, :, 30:] = 100.0
    assert torch.equal(griffin_lim(loud_padding, lengths, N_FFT, HOP, WINDOW, iterations=32), both)
    # alone, the short item matches up to the FFT's rounding, which differs with the batch size on some CPUs (Intel
    # Xeon here) and which Griffin-Lim's iterations amplify: compare after one
    one_step = griffin_lim(pair, lengths, N_FFT, HOP, WINDOW, iterations=1)
    alone = griffin_lim(pair[1:, :, :30], lengths[1:], N_FFT, HOP, WINDOW, iterations=1)
    torch.testing.assert_close(one_step[1, : 30 * HOP], alone[0], atol=1e-5, rtol=0)
    rebuilt = stft(both[:1], N_FFT, HOP, WINDOW).abs()[..., :50]
    assert (rebuilt - magnitude).norm() < 0.15 * magnitude.norm()  # spectral convergence (torchaudio: 0.13)


def test_log_mel_and_its_inverse():
    mel = LogMelSpectrogram(16000, N_FFT, HOP, 80, 0.0, 8000.0)
    tone = 0.5 * torch.sin(2 * torch.pi * 1000 * torch.arange(16000) / 16000)
    log_mel = mel(tone[None])
    assert log_mel.shape == (1, 80, 16000 // HOP + 1)
    magnitude = mel.mel_to_magnitude(log_mel)
    assert magnitude.shape == (1, N_FFT // 2 + 1, log_mel.shape[-1]) and magnitude.min() >= 0
    assert abs(magnitude[0, :, 25].argmax().item() * 16000 / N_FFT - 1000) < 60
