"""Configuration of the embedded acoustic codec: log-mel frames -> residual VQ codes -> audio."""

from transformers import PretrainedConfig

from .registration import register_config

VOCODERS = ("neural", "griffin_lim")  # the `vocoder` choices


class MelCodecConfig(PretrainedConfig):
    r"""The embedded codec, small enough to train on 2 CPU cores in minutes.

    Audio -> log-mel (`n_mels` bins every `hop_length` samples: 50 frames/s at 16 kHz), standardised
    with `mel_mean` / `mel_std` (the corpus' log-mel statistics) -> a residual conv encoder ->
    `num_quantizers` residual VQ codebooks of `codebook_size` codes (EMA, k-means init, dead-code
    replacement) -> a residual conv decoder back to log-mel ->
    a vocoder: `"neural"` (a Vocos-style ConvNeXt network with an inverse-STFT head) or
    `"griffin_lim"` (no weights; the floor the neural vocoder must beat).

    USToken-aided decoding (`ustoken_vocab_size` set; off by default, as in the paper): the decoder also reads
    the USTokens of the speech, each embedded and added to the quantized latents of its
    `frames_per_ustoken` frames, and uses only the first `ustoken_decode_codebooks` codebooks when it has
    them (None: all). Trained with codebook dropout, it renders the words from the USTokens and takes the
    voice and prosody from the coarse codes, which AcousticGPT predicts far better than the fine ones.
    With `speaker_embedding_size` set it also reads the target voice's speaker embedding (the speaker
    encoder's, projected and added to every frame's latent), so the voice need not come from the codes:
    `ustoken_decode_codebooks=0` then renders tokens + voice alone.

    The paper uses WavTokenizer (one 4096-code codebook, 40 frames/s at 24 kHz); frame rate and
    codebooks here are chosen so that round trips keep espeak-ng speech as intelligible as the
    original (docs/experiments/2026-11-25-mel-codec.md).
    """

    model_type = "dualspeechlm_mel_codec"

    def __init__(
        self,
        sampling_rate: int = 16000,
        n_fft: int = 1024,
        hop_length: int = 320,
        n_mels: int = 80,
        f_min: float = 0.0,
        f_max: float = 8000.0,
        mel_mean: float = -5.0,
        mel_std: float = 3.0,
        hidden_size: int = 192,
        latent_size: int = 128,
        encoder_layers: int = 4,
        decoder_layers: int = 4,
        kernel_size: int = 3,
        num_quantizers: int = 4,
        codebook_size: int = 1024,
        codebook_decay: float = 0.99,
        commitment_weight: float = 0.25,
        dead_code_threshold: float = 2.0,
        vocoder: str = "neural",
        griffin_lim_iterations: int = 32,
        vocoder_hidden_size: int = 256,
        vocoder_intermediate_size: int = 768,
        vocoder_layers: int = 6,
        ustoken_vocab_size: int | None = None,
        frames_per_ustoken: int = 2,
        ustoken_decode_codebooks: int | None = None,
        speaker_embedding_size: int | None = None,
        **kwargs,
    ):
        if vocoder not in VOCODERS:
            raise ValueError(f"vocoder must be one of {VOCODERS}, got {vocoder!r}")
        if n_fft < hop_length:
            raise ValueError(f"n_fft ({n_fft}) must be at least hop_length ({hop_length})")
        self.sampling_rate = sampling_rate
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.n_mels = n_mels
        self.f_min = f_min
        self.f_max = f_max
        self.mel_mean = mel_mean
        self.mel_std = mel_std
        self.hidden_size = hidden_size
        self.latent_size = latent_size
        self.encoder_layers = encoder_layers
        self.decoder_layers = decoder_layers
        self.kernel_size = kernel_size
        self.num_quantizers = num_quantizers
        self.codebook_size = codebook_size
        self.codebook_decay = codebook_decay
        self.commitment_weight = commitment_weight
        self.dead_code_threshold = dead_code_threshold
        self.vocoder = vocoder
        self.griffin_lim_iterations = griffin_lim_iterations
        self.vocoder_hidden_size = vocoder_hidden_size
        self.vocoder_intermediate_size = vocoder_intermediate_size
        self.vocoder_layers = vocoder_layers
        if ustoken_decode_codebooks is not None and not 0 <= ustoken_decode_codebooks <= num_quantizers:
            raise ValueError(f"ustoken_decode_codebooks must lie in [0, num_quantizers={num_quantizers}], "
                             f"got {ustoken_decode_codebooks}")
        self.ustoken_vocab_size = ustoken_vocab_size
        self.frames_per_ustoken = frames_per_ustoken
        self.ustoken_decode_codebooks = ustoken_decode_codebooks
        self.speaker_embedding_size = speaker_embedding_size
        super().__init__(**kwargs)

    @property
    def frame_rate(self) -> float:
        return self.sampling_rate / self.hop_length


register_config(MelCodecConfig)  # a DualSpeechLMConfig's `codec_config` may be one
