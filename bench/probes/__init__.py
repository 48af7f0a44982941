"""One-off measurements that still answer an open question, one script each:

- `probe_acoustic`: how well a trained AcousticGPT predicts each codebook of its codec, and how much of the words
  its codes keep against the codec's own round trip (needs a model trained with `acoustic_loss_weight` > 0).
"""
